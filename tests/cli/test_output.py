"""What `echoflow convert` prints for scripts and CI, and which Prefect API it uses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samples import EK60_RAW
from test_cli import one_line_error
from util import ek60_copies, truncated_copy

EXE = str(Path(sys.executable).parent / "echoflow")


def test_json_is_one_document_with_every_file(run_cli, tmp_path):
    good = ek60_copies(tmp_path / "raw", 1)[0]
    bad = truncated_copy(tmp_path / "raw")
    out = tmp_path / "out"
    proc = run_cli("convert", str(good), str(bad), "-m", "EK60", "-o", str(out), "-f", "zarr", "-j", "1", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)  # stdout holds the document and nothing else
    assert doc["ok"] is False and doc["output_prefix"] == str(out)
    by_name = {Path(f["source"]).name: f for f in doc["files"]}
    ok, failed = by_name[good.name], by_name[bad.name]
    assert ok["status"] == "converted" and ok["output"] == str(out / f"{good.stem}.zarr")
    assert ok["bytes"] > 1e6 and ok["seconds"] > 0 and ok["error"] is None
    assert failed["status"] == "failed" and "truncated" in failed["error"]
    assert "converting" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # one more partly failing conversion; --json and the progress lines stay fast
def test_quiet_prints_only_failures(run_cli, tmp_path):
    (tmp_path / "raw").mkdir()
    bad = truncated_copy(tmp_path / "raw")
    proc = run_cli("convert", str(EK60_RAW), str(bad), "-m", "EK60", "-o", str(tmp_path / "out"), "-q", "-j", "1")
    assert proc.returncode == 1 and proc.stdout == ""
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        next(ln for ln in proc.stderr.splitlines() if ln.startswith("failed:"))
    ]
    assert "truncated" in proc.stderr


def test_without_a_terminal_progress_is_lines_and_names_are_never_split(run_cli, tmp_path):
    long_name = "DY1801_EK60_" + "x" * 90 + "-D20180211-T164025.raw"
    (tmp_path / "raw").mkdir()
    shutil.copy(EK60_RAW, tmp_path / "raw" / long_name)
    shutil.copy(EK60_RAW, tmp_path / "raw" / EK60_RAW.name)
    out = tmp_path / "out"
    proc = run_cli(
        "convert",
        str(tmp_path / "raw" / "*.raw"),
        "-m",
        "EK60",
        "-o",
        str(out),
        "-j",
        "1",
        env={"COLUMNS": "80", "ECHOFLOW_PROGRESS_SECONDS": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "converting 2 files" in proc.stderr and "converting: 2/2 files" in proc.stderr
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr  # no bar, no cursor moves
    rows = [ln for ln in proc.stdout.splitlines() if long_name in ln]
    assert len(rows) == 1 and f"{Path(long_name).stem}.nc" in rows[0]  # whole, and relative to --out
    assert str(out) + "/" not in rows[0]


def _profile_env(tmp_path: Path, api: str) -> dict:
    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    (prefect_home / "profiles.toml").write_text(f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{api}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(prefect_home), ECHOFLOW_HOME=str(tmp_path / "echoflow-home"), COLUMNS="200")
    return env


def test_active_profile_wins_over_the_local_api(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    env = _profile_env(tmp_path, prefect_server)
    out = tmp_path / "out"
    proc = subprocess.run(
        [EXE, "convert", str(EK60_RAW), "-m", "EK60", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Prefect API {prefect_server} (from Prefect profile 'team')" in proc.stderr
    assert not (tmp_path / "echoflow-home").exists()  # no local API was started
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["convert-batch"])))
    assert [r.name for r in runs if r.parameters.get("output_prefix") == str(out)] == [
        f"convert-batch · out · {EK60_RAW.stem}"
    ]


def test_unreachable_configured_api_is_one_line(tmp_path):
    import socket

    closed = socket.socket()  # bound, never listening: connections are refused
    closed.bind(("127.0.0.1", 0))
    api = f"http://127.0.0.1:{closed.getsockname()[1]}/api"
    env = _profile_env(tmp_path, api)
    for args in (
        ["convert", str(EK60_RAW), "-m", "EK60", "-o", str(tmp_path / "o")],
        ["deploy", "--pool", "p", "--image", "i"],
    ):
        proc = subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=120)
        line = one_line_error(proc)
        assert f"the Prefect API {api} (from Prefect profile 'team') is unreachable" in line
    assert not (tmp_path / "echoflow-home").exists() and not (tmp_path / "o").exists()
