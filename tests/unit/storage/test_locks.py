"""One writer per output: locks that a holder's death releases, leases that expire."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from echoflow import storage
from echoflow.errors import OutputBusy, OutputError
from echoflow.storage.locks import LocalLock, S3Lease

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from echoflow.storage.locks import LocalLock
    lock = LocalLock(Path(sys.argv[1]), "holder")
    lock.acquire(10)
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_local_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    target = tmp_path / "f.zarr"
    proc = _holder(target)
    try:
        waits: list[str] = []
        with pytest.raises(OutputBusy, match="still being written by holder"):
            LocalLock(target, "me").acquire(1, waits.append)
        assert waits == ["holder"]
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait()
        mine = LocalLock(target, "me")
        mine.acquire(5)  # the kernel released the dead holder's lock
        mine.release()
        assert not (tmp_path / storage.STAGING_DIR).exists()
    finally:
        proc.kill()


def test_local_lock_waiter_gets_it_when_released(tmp_path):
    target = tmp_path / "f.nc"
    first = LocalLock(target, "first")
    first.acquire(1)
    got = []

    def second() -> None:
        lock = LocalLock(target, "second")
        lock.acquire(10)
        got.append(time.monotonic())
        lock.release()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(1)
    assert not got
    released = time.monotonic()
    first.release()
    t.join(10)
    assert got and got[0] >= released


def test_s3_lease_is_exclusive_expires_and_is_taken_over(s3_options, private_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOFLOW_LEASE_SECONDS", "30")  # cannot lapse while the second tries, however slow
    fs, path = storage.filesystem(f"s3://{private_bucket}/lease-{tmp_path.name}/x.zarr", s3_options)
    first = S3Lease(fs, path, "first")
    first.acquire(1)
    with pytest.raises(OutputBusy, match="first"):
        S3Lease(fs, path, "second").acquire(1)
    monkeypatch.setenv("ECHOFLOW_LEASE_SECONDS", "2")
    first._stop.set()  # the holder stops renewing (a frozen or dead writer) ...
    assert first.still_held()  # ... after one last renewal, for 2 s
    time.sleep(2.5)
    second = S3Lease(fs, path, "second")
    second.acquire(5)  # expired: taken over with If-Match
    assert first.still_held() is False and first.lost
    second.release()
    assert not fs.exists(path + storage.LOCK_SUFFIX)


def test_writer_that_lost_its_lease_does_not_mark_complete(s3_options, private_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOFLOW_LEASE_SECONDS", "2")
    out = f"s3://{private_bucket}/lost-{tmp_path.name}/x.nc"
    fs, path = storage.filesystem(out, s3_options)
    with storage.OutputWriter(out, s3_options, tmp_path) as w:
        w.lock._stop.set()
        time.sleep(2.5)
        thief = S3Lease(fs, path, "thief")
        thief.acquire(5)
        w.staged.write_bytes(b"data")
        with pytest.raises(OutputError, match="lease expired"):
            w.commit({})
        thief.release()
    assert storage.read_marker(out, s3_options) is None


def test_staging_beside_outputs_whose_writers_release_keeps_working(tmp_path):
    """Recipes stage before locking. Another output's writer, releasing its lock, removes
    the shared staging folder when it looks empty; a writer staging at that moment must
    still get its staged path, and keep it (it is reserved, so the folder is not empty)."""
    stop = threading.Event()

    def churn() -> None:
        lock = LocalLock(tmp_path / "other.zarr", "churn")
        while not stop.is_set():
            lock.acquire(5)
            lock.release()

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(2000):
            staged = storage.staging_path(str(tmp_path / f"out{i % 7}.zarr"), tmp_path)
            assert staged.is_dir()  # reserved, so still there after any release
            storage.discard(staged)
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_staging_first_commit_sweeps_partials_of_dead_writers_only(tmp_path):
    """Recipes stage before locking, so their commit cannot sweep every other partial of
    the output (another chain may be staging it right now); it removes those of writers of
    this host whose process is gone (a worker killed for memory), and keeps the live ones."""
    import socket

    out = str(tmp_path / "x.zarr")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = storage.staging_path(out, tmp_path, writer=f"{host}-{dead.pid}-deadbeef")
    (stale / "zarr.json").write_text("{}")
    live = storage.staging_path(out, tmp_path, writer=f"{host}-{os.getppid()}-0a0a0a0a")  # alive, not us
    elsewhere = storage.staging_path(out, tmp_path, writer=f"other-host-{dead.pid}-0b0b0b0b")
    ours = storage.staging_path(out, tmp_path)
    (ours / "zarr.json").write_text("{}")
    storage.commit(ours, out, None, {"stage": "test"})
    assert storage.read_marker(out, None)
    assert not stale.exists(), "a dead writer's partial was left"
    assert live.exists() and elsewhere.exists(), "a partial that may be live was removed"
