"""The output protocol under real failures: concurrent writers, signals, killed workers,
a vanished API. Real CLI processes, real echopype, a real Prefect server, real S3 (moto)."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from reliability_util import (
    EXE,
    assert_equals_reference,
    leftovers,
    pool_workers,
    reference,
    start_cli,
    wait_until_writing,
)
from samples import EK60_RAW
from util import ek60_copies

from echoflow import storage

# slow: concurrent CLIs racing on the same outputs, signals, a vanished API: several real CLI processes each
pytestmark = pytest.mark.slow


def _env(prefect_server: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(tmp_path / "home"), **extra}


def _race(args_per_writer: list[list[str]], env: dict[str, str], max_offset: float = 1.5) -> list[subprocess.Popen]:
    procs = []
    for args in args_per_writer:
        procs.append(start_cli(args, env))
        time.sleep(random.uniform(0, max_offset))
    for p in procs:
        p.wait(600)
    return procs


@pytest.mark.parametrize("fmt", ["zarr", "netcdf"])
def test_concurrent_writers_never_leave_a_damaged_complete_output(fmt, prefect_server, tmp_path):
    """Three `echoflow convert` on the same sources and outputs at once, plain and with
    --overwrite: every marked output equals a clean conversion, nothing is left staged,
    nothing fails, and one more run finds everything complete."""
    raws = ek60_copies(tmp_path / "raw", 4)
    out = tmp_path / "out"
    ref = reference(EK60_RAW, tmp_path, fmt)
    env = _env(prefect_server, tmp_path)
    base = ["convert", str(tmp_path / "raw" / "*.raw"), "-m", "EK60", "-o", str(out), "-f", fmt, "-j", "1"]
    ext = ".zarr" if fmt == "zarr" else ".nc"
    for extra in ([], ["--overwrite"]):
        procs = _race([base + extra] * 3, env)
        for p in procs:
            assert p.returncode == 0, p.stderr.read()
        marked = [r for r in raws if storage.read_marker(str(out / f"{r.stem}{ext}"), {})]
        assert len(marked) == len(raws)
        for r in marked:
            assert_equals_reference(str(out / f"{r.stem}{ext}"), ref)
        assert leftovers(out) == []
    again = start_cli(base, env)
    assert again.wait(300) == 0 and "4 skipped" in again.stdout.read()


def test_concurrent_writers_on_s3(prefect_server, s3_env, s3_options, private_bucket, tmp_path):
    raws = ek60_copies(tmp_path / "raw", 3)
    prefix = f"s3://{private_bucket}/race-{tmp_path.name}"
    ref = reference(EK60_RAW, tmp_path, "zarr")
    env = _env(prefect_server, tmp_path, **s3_env)
    base = ["convert", *map(str, raws), "-m", "EK60", "-o", prefix, "-f", "zarr", "-j", "1", "--overwrite"]
    procs = _race([base] * 3, env)
    for p in procs:
        assert p.returncode == 0, p.stderr.read()
    opts = s3_options
    fs, root = storage.filesystem(prefix, opts)
    for r in raws:
        out = f"{prefix}/{r.stem}.zarr"
        assert storage.read_marker(out, opts) is not None
        assert_equals_reference(out, ref, opts)
    assert not [k for k in fs.find(root) if k.endswith(storage.LOCK_SUFFIX)]  # every lease released


def _workers_of(proc: subprocess.Popen, expect: int) -> list[int]:
    """The workers, and the fork server and resource tracker (the CLI's own children): all
    of them must go with the CLI."""
    pool_workers(proc, expect)
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [k.pid for k in kids if "multiprocessing" in " ".join(k.cmdline())]


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_sigkill_of_the_cli_takes_its_workers_with_it(prefect_server, tmp_path):
    raws = ek60_copies(tmp_path / "raw", 6)
    proc = start_cli(
        ["convert", *map(str, raws), "-m", "EK60", "-o", str(tmp_path / "out"), "-f", "zarr", "-j", "2"],
        _env(prefect_server, tmp_path),
    )
    workers = _workers_of(proc, 2)
    time.sleep(3)  # mid-batch
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(workers) == [], "worker processes (or their fork server) outlived the killed CLI"


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="per-thread priorities are Linux's")
def test_the_conversions_run_ahead_of_the_bookkeeping(prefect_server, tmp_path):
    """On a busy machine the workers (and their fork server) get the CPU first; the CLI's
    Prefect bookkeeping runs at a lower priority."""
    from echoflow.workers import BOOKKEEPING_NICE

    raws = ek60_copies(tmp_path / "raw", 6)
    proc = start_cli(
        ["convert", *map(str, raws), "-m", "EK60", "-o", str(tmp_path / "out"), "-f", "zarr", "-j", "2"],
        _env(prefect_server, tmp_path),
    )
    try:
        workers = _workers_of(proc, 2)
        base = os.nice(0)
        assert psutil.Process(proc.pid).nice() == base + BOOKKEEPING_NICE
        assert [psutil.Process(w).nice() for w in workers] == [base] * len(workers)
    finally:
        assert proc.wait(120) == 0


def test_sigterm_stops_cleanly_and_a_rerun_completes(prefect_server, tmp_path):
    raws = ek60_copies(tmp_path / "raw", 8)
    out = tmp_path / "out"
    env = _env(prefect_server, tmp_path, ECHOFLOW_STOP_GRACE_SECONDS="2")
    args = ["convert", *map(str, raws), "-m", "EK60", "-o", str(out), "-f", "zarr", "-j", "2"]
    proc = start_cli(args, env)
    workers = _workers_of(proc, 2)
    wait_until_writing(out, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    took = time.monotonic() - sent
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert code == 143, stderr
    assert took < 2 + 15, f"took {took:.1f} s to stop"
    assert "cancelled" in stdout  # the summary lists what did not finish
    assert leftovers(out) == []
    time.sleep(1)
    assert _alive(workers) == []
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=50)
    ours = [r for r in runs if r.parameters.get("output_prefix") == str(out)]
    assert ours and ours[0].state.is_cancelled(), [r.state for r in ours]
    assert "SIGTERM" in (ours[0].state.message or "")

    rerun = start_cli(args, {**env})
    assert rerun.wait(300) == 0, rerun.stderr.read()
    for r in raws:
        assert storage.read_marker(str(out / f"{r.stem}.zarr"), {}) is not None
    assert leftovers(out) == []


def test_local_api_stopped_mid_run_still_prints_the_summary(tmp_path):
    """`echoflow server stop` while converting: the files finish, the summary prints, one
    line says the run's record is incomplete, the exit code follows the files."""
    raws = ek60_copies(tmp_path / "raw", 4)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(ECHOFLOW_HOME=str(tmp_path / "home"), PREFECT_CLIENT_MAX_RETRIES="1")
    proc = subprocess.Popen(
        [
            EXE,
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
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not list(out.glob("*.zarr")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.1)
    stop = subprocess.run([EXE, "server", "stop"], env=env, capture_output=True, text=True)
    assert stop.returncode == 0
    code = proc.wait(300)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    done = [r for r in raws if storage.read_marker(str(out / f"{r.stem}.zarr"), {})]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len(stderr.strip().splitlines()) <= 6, stderr
    if len(done) == len(raws):
        assert code == 0 and "could not be written" in stderr and "4 converted" in stdout
    else:
        assert code != 0 and "lost the Prefect API" in stderr


def _echoflow_processes(home: str) -> list[psutil.Process]:
    """Live multiprocessing processes (fork server, workers, resource tracker) of one home."""
    out = []
    for p in psutil.process_iter(["cmdline", "environ", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE or "multiprocessing" not in " ".join(p.info["cmdline"] or []):
            continue
        if (p.info["environ"] or {}).get("ECHOFLOW_HOME") == home:
            out.append(p)
    return out


def test_a_command_with_nothing_to_do_leaves_no_process_behind(prefect_server, tmp_path):
    """`run` and `convert` start the workers' fork server before reading their input (its
    echopype import is the long pole); a command that then needs no worker stops it on
    exit, so nothing goes on importing for nothing or holds the caller's stderr."""
    ek60_copies(tmp_path / "raw", 1)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: n\nsource: {{url: {tmp_path / 'raw'}}}\nsonar_model: EK60\nquicklook: {{enabled: false}}\n"
        f"output: {{prefix: {tmp_path / 'out'}}}\nstages: [open_raw]\n"
    )
    env = {"PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(tmp_path / "home")}
    first = start_cli(["run", str(recipe)], env)
    assert first.wait(300) == 0, first.stderr.read()
    raws = str(tmp_path / "raw" / "*.raw")
    for args in (["run", str(recipe)], ["convert", raws, "-m", "EK60", "-o", str(tmp_path / "out"), "-f", "zarr"]):
        proc = start_cli(args, env)
        assert proc.wait(120) == 0, proc.stderr.read()
        # stderr reaches its end once the command has exited: no process still holds it
        assert select.select([proc.stderr], [], [], 1.0)[0], f"{args[0]}: stderr still held after exit"
        deadline = time.monotonic() + 0.5  # processes that were told to go, going
        while _echoflow_processes(env["ECHOFLOW_HOME"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _echoflow_processes(env["ECHOFLOW_HOME"])
        assert left == [], f"{args[0]}: left behind {[' '.join(p.cmdline())[:80] for p in left]}"
