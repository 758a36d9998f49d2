"""The `echoflow` command as a user runs it: real process, real Prefect, real echopype."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import AZFP_RAW, AZFP_XML, EK60_RAW
from util import assert_matches_direct, ek60_copies, truncated_copy

from echoflow import __version__
from echoflow.storage import STAGING_DIR, read_marker


def one_line_error(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_version_and_help(run_cli):
    proc = run_cli("--version")
    assert proc.returncode == 0 and f"echoflow {__version__}" in proc.stdout and "echopype 0.11.1" in proc.stdout
    helptext = run_cli("--help").stdout
    for command in ("convert", "deploy", "graph"):
        assert command in helptext


@pytest.mark.slow  # two -j 2 runs and a direct echopype conversion; the CLI's conversions stay fast in
# test_partial_failure_..., test_everything_the_run_reported_... and tests/cli/test_output.py
def test_convert_folder_shows_summary_and_exit_code(run_cli, tmp_path):
    raws = ek60_copies(tmp_path / "raw", 2)
    out = tmp_path / "out"
    proc = run_cli(
        "convert",
        str(tmp_path / "raw" / "*.raw"),
        "--sonar-model",
        "EK60",
        "--out",
        str(out),
        "--format",
        "zarr",
        "--concurrency",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 files: 2 converted, 0 skipped" in proc.stdout
    assert_matches_direct(str(out / f"{raws[0].stem}.zarr"), raws[0], "EK60", tmp_path)
    again = run_cli("convert", *map(str, raws), "-m", "EK60", "-o", str(out), "-f", "zarr")
    assert again.returncode == 0 and "0 converted, 2 skipped" in again.stdout


@pytest.mark.slow  # AZFP through --xml; the conversion itself: tests/flows/test_convert_flow.py
def test_azfp_with_xml(run_cli, tmp_path):
    proc = run_cli("convert", str(AZFP_RAW), "-m", "AZFP", "--xml", str(AZFP_XML), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert_matches_direct(str(tmp_path / "o" / "17031001.01A.nc"), AZFP_RAW, "AZFP", tmp_path, xml=AZFP_XML)


def test_partial_failure_exits_nonzero_and_lists_every_file(run_cli, tmp_path):
    good = ek60_copies(tmp_path / "raw", 1)[0]
    bad = truncated_copy(tmp_path / "raw")
    proc = run_cli("convert", str(good), str(bad), "-m", "EK60", "-o", str(tmp_path / "out"), "-j", "1")
    assert proc.returncode == 1
    assert "1 converted, 0 skipped (already complete), 1 failed" in proc.stdout
    assert "truncated" in proc.stdout and good.name in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["/nonexistent/*.raw", "-m", "EK60"], "/nonexistent/*.raw: no files match this pattern"),
        ([str(EK60_RAW), "-m", "EK99"], "unknown sonar model 'EK99': echopype supports"),
        ([str(AZFP_RAW), "-m", "AZFP"], "sonar model AZFP needs its instrument XML file"),
        (
            [str(EK60_RAW), "-m", "EK60", "-f", "hdf5"],
            "unknown output_type 'hdf5': allowed values are 'netcdf', 'zarr'",
        ),
    ],
)
def test_bad_input_is_one_clear_line(run_cli, tmp_path, args, expected):
    line = one_line_error(run_cli("convert", *args, "-o", str(tmp_path / "o")))
    assert expected in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow  # the check itself: tests/unit/test_integrity.py
def test_file_of_another_model_is_reported(run_cli, tmp_path):
    proc = run_cli("convert", str(EK60_RAW), "-m", "EK80", "-o", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert "does not start like EK80 data (it looks like EK60/ES70 data)" in proc.stdout


def test_output_not_writable(run_cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_line_error(run_cli("convert", str(EK60_RAW), "-m", "EK60", "-o", str(blocker / "out")))
    assert str(blocker) in line and "writing to the output location" in line


@pytest.mark.slow  # the same refusal in the flow: tests/flows/test_s3.py
def test_unreadable_bucket(run_cli, tmp_path, s3_env, private_bucket, s3_options):
    import s3fs

    s3fs.S3FileSystem(**s3_options).put_file(str(EK60_RAW), f"{private_bucket}/cli/{EK60_RAW.name}")
    proc = run_cli(
        "convert",
        f"s3://{private_bucket}/cli/{EK60_RAW.name}",
        "-m",
        "EK60",
        "--anon",
        "-o",
        str(tmp_path / "o"),
        env={"AWS_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"]},
    )
    assert proc.returncode == 1
    assert "access denied (403) while downloading; check credentials" in proc.stdout


def test_graph_writes_an_image(run_cli, tmp_path):
    out = tmp_path / "graph.png"
    proc = run_cli("graph", "convert-raw-sonar", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    mmd = tmp_path / "g.mmd"
    assert run_cli("graph", "convert-raw-sonar", "-o", str(mmd)).returncode == 0
    assert "Open_Raw_File_0 --> Save_Converted_File_0" in mmd.read_text()


@pytest.mark.slow  # SIGKILL mid-file, then a rerun
def test_killed_conversion_leaves_nothing_a_rerun_skips(run_cli, prefect_server, tmp_path):
    raws = ek60_copies(tmp_path / "raw", 3)
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "echoflow"),
            "convert",
            *map(str, raws),
            "-m",
            "EK60",
            "-o",
            str(out),
            "-f",
            "zarr",
            "-j",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list((out / STAGING_DIR).glob("*partial*")) if (out / STAGING_DIR).exists() else True:
        assert time.monotonic() < deadline and proc.poll() is None, "conversion never started writing"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-write: a partial output exists right now
    proc.wait()
    incomplete = [r for r in raws if read_marker(str(out / f"{r.stem}.zarr"), {}) is None]
    assert incomplete, "the kill came too late to test anything"

    rerun = run_cli("convert", *map(str, raws), "-m", "EK60", "-o", str(out), "-f", "zarr", "-j", "1")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(incomplete)} converted, {3 - len(incomplete)} skipped" in rerun.stdout
    for r in raws:
        assert read_marker(str(out / f"{r.stem}.zarr"), {}) is not None
    assert_matches_direct(str(out / f"{incomplete[0].stem}.zarr"), incomplete[0], "EK60", tmp_path)
    assert not list(out.rglob("*partial*"))


@pytest.mark.slow  # starts, reuses and stops the embedded local API
def test_embedded_default_needs_no_server(tmp_path):
    """No PREFECT_API_URL: the CLI starts its own local API under ECHOFLOW_HOME and reuses it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(ECHOFLOW_HOME=str(tmp_path / "home"), ECHOFLOW_SERVER_IDLE_SECONDS="120")
    exe = str(Path(sys.executable).parent / "echoflow")
    try:
        for expected in ("1 converted", "1 skipped"):
            proc = subprocess.run(
                [exe, "convert", str(EK60_RAW), "-m", "EK60", "-o", str(tmp_path / "o")],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stderr
            assert expected in proc.stdout
        assert (tmp_path / "home" / "prefect").is_dir()
        assert (
            "running: API http://127.0.0.1"
            in subprocess.run([exe, "server", "status"], env=env, capture_output=True, text=True).stdout
        )
    finally:
        subprocess.run([exe, "server", "stop"], env=env, capture_output=True)


def test_everything_the_run_reported_reaches_the_api(run_cli, tmp_path):
    """The CLI skips interpreter teardown at exit; its run's logs, task runs and summary
    must all have reached the API by then."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect_api import artifacts, flow_run_logs, task_runs

    raws = ek60_copies(tmp_path / "raw", 3)
    out = tmp_path / "out"
    proc = run_cli("convert", *map(str, raws), "-m", "EK60", "-o", str(out), "-f", "zarr", "-j", "2")
    assert proc.returncode == 0, proc.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["convert-batch"])))
    [run] = [r for r in runs if r.parameters.get("output_prefix") == str(out)]
    assert run.state.is_completed()
    tasks = task_runs(run.id, expect=3)
    assert sorted(t.state.name for t in tasks) == ["Completed"] * 3
    logs = flow_run_logs(run.id)
    for raw in raws:
        assert any(m.startswith(f"converted {raw}") for m in logs), logs
    assert any(m.startswith("Finished in state Completed") for m in logs), logs
    assert [a.key for a in artifacts(run.id)] == ["echoflow-summary"]
