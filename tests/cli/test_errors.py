"""Each error class: one line that names what is wrong, no traceback, only the retryable
ones retried, nothing left half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from reliability_util import leftovers
from samples import AZFP_RAW, EK60_RAW

from echoflow import storage


def _one_line_failure(proc: subprocess.CompletedProcess, expected: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if expected in ln]
    assert len(lines) == 1, proc.stdout
    return lines[0]


@pytest.mark.slow  # the check itself: tests/unit/test_integrity.py
def test_empty_file_says_zero_bytes(run_cli, tmp_path):
    raw = tmp_path / "DY1801_EK60-D20180211-T000000.raw"
    raw.write_bytes(b"")
    line = _one_line_failure(run_cli("convert", str(raw), "-m", "EK60", "-o", str(tmp_path / "o")), "0 bytes")
    assert raw.name in line and "empty" in line


@pytest.mark.slow  # two failing conversions; the checks themselves: tests/unit/test_integrity.py
def test_wrong_azfp_xml_names_the_xml(run_cli, tmp_path):
    xml = tmp_path / "wrong.XML"
    xml.write_text("<Config><Frequency>1</Frequency></Config>")
    proc = run_cli("convert", str(AZFP_RAW), "-m", "AZFP", "--xml", str(xml), "-o", str(tmp_path / "o"))
    line = _one_line_failure(proc, "wrong.XML")
    assert "not an AZFP instrument configuration" in line and AZFP_RAW.name not in line
    junk = tmp_path / "junk.XML"
    junk.write_bytes(b"\x00\x01 binary")
    line = _one_line_failure(
        run_cli("convert", str(AZFP_RAW), "-m", "AZFP", "--xml", str(junk), "-o", str(tmp_path / "o")), "junk.XML"
    )
    assert "not a readable XML file" in line


def test_name_too_long_fails_before_writing(run_cli, tmp_path):
    raw = tmp_path / ("x" * 242 + ".raw")  # its output fits, its completion marker would not
    shutil.copyfile(EK60_RAW, raw)
    out = tmp_path / "o"
    line = _one_line_failure(
        run_cli("convert", str(raw), "-m", "EK60", "-o", str(out), "-f", "zarr"), "output name too long"
    )
    assert "shorten the file name" in line
    assert leftovers(out) == [] and not list(out.glob("x*"))


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.parametrize("fmt", [pytest.param("netcdf", marks=pytest.mark.slow), "zarr"])  # slow: the same path
def test_full_disk_names_the_path_and_is_not_retried(run_cli, tiny_disk, fmt):
    start = time.monotonic()
    proc = run_cli("convert", str(EK60_RAW), "-m", "EK60", "-o", str(tiny_disk / "out"), "-f", fmt)
    took = time.monotonic() - start
    line = _one_line_failure(proc, "no space left on device")
    assert str(tiny_disk) in line and "credentials" not in line
    assert took < 60  # retries would wait 2 + 4 + 8 s on top of three conversions
    assert leftovers(tiny_disk) == []
    assert (
        storage.read_marker(str(tiny_disk / "out" / f"{EK60_RAW.stem}.{'nc' if fmt == 'netcdf' else 'zarr'}"), {})
        is None
    )


@pytest.mark.slow  # waits out the whole retry budget (~30 s) by design
def test_unreachable_endpoint_fails_in_bounded_time_with_the_budget(run_cli, tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    start = time.monotonic()
    proc = run_cli(
        "convert", "s3://bucket/raw/DY1801_EK60-D20180211-T164025.raw", "-m", "EK60", "-o", str(tmp_path / "o"), env=env
    )
    took = time.monotonic() - start
    line = _one_line_failure(proc, "retried up to")
    assert "s3://bucket/raw/DY1801_EK60-D20180211-T164025.raw" in line and "3 attempts" in line
    assert took < 45, f"{took:.0f} s"


@pytest.mark.slow  # kills a worker process mid-file, then waits for the retry
def test_killed_worker_mid_file_is_retried_and_converted(prefect_server, tmp_path):
    from reliability_util import assert_equals_reference, pool_workers, reference, start_cli, wait_until_writing
    from util import ek60_copies

    raws = ek60_copies(tmp_path / "raw", 4)
    out = tmp_path / "out"
    proc = start_cli(
        ["convert", *map(str, raws), "-m", "EK60", "-o", str(out), "-f", "zarr", "-j", "2"],
        {"PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(tmp_path / "home")},
    )
    wait_until_writing(out, proc)
    worker = pool_workers(proc, 2)[0]
    worker.kill()  # what an out-of-memory kill looks like
    assert worker.wait(5) is not None or not worker.is_running()
    assert proc.wait(300) == 0, proc.stderr.read()
    assert "4 converted" in proc.stdout.read()
    ref = reference(EK60_RAW, tmp_path, "zarr")
    for r in raws:
        assert_equals_reference(str(out / f"{r.stem}.zarr"), ref)
    assert leftovers(out) == []


@pytest.mark.slow  # kills a worker process during a recipe, then waits for the retry
def test_killed_worker_during_a_recipe_is_retried_and_every_file_completes(prefect_server, tmp_path):
    """A worker dies (as an out-of-memory kill does) while its batch of chains runs: the
    pool is rebuilt and the files it took down are resubmitted, not failed."""
    from reliability_util import pool_workers, start_cli
    from util import ek60_copies

    raws = ek60_copies(tmp_path / "raw", 8)
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: k\nsource: {{url: {tmp_path / 'raw'}}}\nsonar_model: EK60\nconcurrency: 2\n"
        f"quicklook: {{enabled: false}}\noutput: {{prefix: {out}}}\n"
        "stages: [open_raw, compute_Sv, {compute_MVBS: {range_bin: 20m, ping_time_bin: 20s}}]\n"
    )
    proc = start_cli(
        ["run", str(recipe), "--json"],
        {"PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(tmp_path / "home")},
    )
    worker = pool_workers(proc, 2)[0]
    deadline = time.monotonic() + 120
    while not list(out.glob("compute_MVBS/*.echoflow.json")):  # chains are running: some done, most not
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    worker.kill()
    assert proc.wait(300) == 0, proc.stderr.read()
    rows = json.loads(proc.stdout.read())["results"]
    assert sorted((r["item"], r["status"]) for r in rows) == [(r.stem, "computed") for r in raws]
    for r in raws:
        assert storage.read_marker(str(out / "compute_MVBS" / f"{r.stem}.zarr"), None)
    assert leftovers(out / "compute_MVBS") == []


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`echoflow convert --help | head`: the pipe closes early; that is no error to report."""
    import os
    import sys
    from pathlib import Path

    echoflow = Path(sys.executable).parent / "echoflow"
    env = {**os.environ, "ECHOFLOW_HOME": str(tmp_path)}
    whole = subprocess.run([echoflow, "convert", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert len(whole.stdout.splitlines()) > 35  # so `head -30` leaves while it still writes
    for _ in range(3):
        proc = subprocess.run(
            ["bash", "-c", f"{echoflow} convert --help | head -30"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.stderr == "" and "Usage" in proc.stdout
