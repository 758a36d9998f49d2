"""Library noise (echopype's tau_effective notice) goes to the run's log, not the terminal."""

import json

import pytest
from samples import EK60_RAW


@pytest.mark.slow  # two recipe runs (open_raw, compute_Sv) through the CLI
def test_echopype_notices_reach_the_run_log_not_the_terminal(run_cli, tmp_path):
    from prefect_api import flow_run_logs

    recipe = tmp_path / "sv.yaml"
    recipe.write_text(
        f"name: sv\nsource: {{url: {EK60_RAW.parent}}}\nsonar_model: EK60\n"
        f"output: {{prefix: {tmp_path / 'out'}}}\nstages: [open_raw, compute_Sv]\n"
        "quicklook: {enabled: false}\n"
    )
    proc = run_cli("run", str(recipe), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "tau_effective" not in proc.stderr + proc.stdout and "Warning" not in proc.stderr
    doc = json.loads(proc.stdout)
    run_id = doc["run_url"].rsplit("/", 1)[-1]
    assert any("tau_effective" in m for m in flow_run_logs(run_id)), "the notice was lost, not moved"
    loud = run_cli("run", str(recipe), "--overwrite", "-v")  # -v: the terminal shows it again
    assert loud.returncode == 0 and "tau_effective" in loud.stderr + loud.stdout
