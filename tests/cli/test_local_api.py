"""The embedded local API as a new user meets it: the CLI and a plain Python script record
on it, its port is stable, and a real browser shows the run at the printed UI address."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from procs import free_port
from samples import EK60_RAW
from util import ek60_copies

from echoflow.storage import read_marker

# slow: the embedded local API's whole life (start, reuse, stop), a notebook kernel, a browser
pytestmark = pytest.mark.slow

EXE = str(Path(sys.executable).parent / "echoflow")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An ECHOFLOW_HOME with nothing of Prefect configured; its local API is stopped at the end."""
    root = tmp_path_factory.mktemp("local-api")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        ECHOFLOW_HOME=str(root / "home"),
        PREFECT_HOME=str(root / "user-prefect"),
        ECHOFLOW_SERVER_PORT=str(free_port()),
        ECHOFLOW_SERVER_IDLE_SECONDS="600",
        COLUMNS="200",
    )
    yield root, env
    subprocess.run([EXE, "server", "stop"], env=env, capture_output=True, timeout=60)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=600)


def flow_runs(api: str, name: str) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": [name]}}}, timeout=10)
    r.raise_for_status()
    return r.json()


def test_ui_reads_its_own_api_and_port_is_stable(home):
    root, env = home
    first = cli(env, "server", "start")
    assert first.returncode == 0, first.stderr
    api = re.search(r"API (http://127\.0\.0\.1:\d+/api)", first.stdout).group(1)
    assert api.endswith(f":{env['ECHOFLOW_SERVER_PORT']}/api")
    ui = api.removesuffix("/api")
    assert httpx.get(f"{ui}/ui-settings", timeout=10).json()["api_url"] == api
    assert cli(env, "server", "stop").stdout.strip() == "stopped"
    assert "not running" in cli(env, "server", "status").stdout
    again = cli(env, "server", "start")
    assert f"API {api}" in again.stdout, "the port changed across a restart"
    # Another home gets the next free port, never this one's.
    other = {**env, "ECHOFLOW_HOME": str(root / "other")}
    try:
        line = cli(other, "server", "start").stdout
        assert "API http://127.0.0.1:" in line and f"API {api}" not in line
    finally:
        cli(other, "server", "stop")


def test_plain_script_without_main_guard_records_on_the_local_api(home, tmp_path):
    root, env = home
    raws = ek60_copies(tmp_path / "raw", 2)
    script = tmp_path / "convert_cruise.py"
    script.write_text(
        textwrap.dedent(f"""
        from echoflow.flows.batch import convert_batch

        state = convert_batch(sources=[{str(raws[0])!r}, {str(raws[1])!r}], sonar_model="EK60",
                              output_prefix={str(tmp_path / "script-out")!r}, output_type="zarr",
                              concurrency=2, return_state=True)
        print("STATE", state.name)
    """)
    )
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("STATE Completed") == 1, proc.stdout  # workers did not re-run the script
    assert proc.stderr.count("echoflow: runs recorded in local Prefect API http://127.0.0.1:") == 1, proc.stderr
    for raw in raws:
        assert read_marker(str(tmp_path / "script-out" / f"{raw.stem}.zarr"), {}) is not None
    api = re.search(r"API (http://\S+/api)", cli(env, "server", "status").stdout).group(1)
    runs = [
        r
        for r in flow_runs(api, "convert-batch")
        if r["parameters"].get("output_prefix") == str(tmp_path / "script-out")
    ]
    assert [r["name"] for r in runs] == ["convert-batch · script-out · 2 files"]


@pytest.mark.browser
def test_browser_shows_run_tasks_logs_and_summary(home, tmp_path):
    from browser import chromium

    root, env = home
    out = tmp_path / "out"
    proc = cli(env, "convert", str(EK60_RAW), "-m", "EK60", "-o", str(out), "-f", "zarr")
    assert proc.returncode == 0, proc.stderr
    ui = re.search(r"UI (http://127\.0\.0\.1:\d+)", proc.stderr).group(1)
    [run] = [r for r in flow_runs(f"{ui}/api", "convert-batch") if r["parameters"]["output_prefix"] == str(out)]
    name = f"convert-batch · out · {EK60_RAW.stem}"
    assert run["name"] == name
    printed = re.search(r"^run: (\S+)$", proc.stdout, re.M).group(1)
    assert printed == f"{ui}/runs/flow-run/{run['id']}"
    with chromium(free_port()) as page:
        page.open(printed, name, "Completed", f"files to {out}", "Finished in state Completed")
        page.click("Task Runs", f"convert {EK60_RAW.name}")
        page.click("Artifacts", "echoflow-summary", "1 files: 1 converted")


def test_notebook_records_on_the_local_api(home, tmp_path):
    """A Jupyter kernel: no file for spawn to re-import, an event loop already running."""
    import nbformat
    from nbclient import NotebookClient

    root, env = home
    raws = ek60_copies(tmp_path / "raw", 2)
    out = tmp_path / "nb-out"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("from echoflow.flows.batch import convert_batch"),
            nbformat.v4.new_code_cell(
                f"state = convert_batch(sources={[str(r) for r in raws]!r}, sonar_model='EK60',\n"
                f"                      output_prefix={str(out)!r}, output_type='zarr', concurrency=2,\n"
                "                      return_state=True)\n"
                "print('STATE', state.name)"
            ),
        ]
    )
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute(
        env=env
    )
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream")
    assert "STATE Completed" in printed, nb.cells[1].outputs
    api = re.search(r"API (http://\S+/api)", cli(env, "server", "status").stdout).group(1)
    runs = [r for r in flow_runs(api, "convert-batch") if r["parameters"].get("output_prefix") == str(out)]
    assert [r["name"] for r in runs] == ["convert-batch · nb-out · 2 files"]
    assert runs[0]["state_type"] == "COMPLETED"
