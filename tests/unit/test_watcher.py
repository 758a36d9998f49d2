"""The watcher's decisions on real files (no Prefect): settling, sidecars, failure records."""

from __future__ import annotations

import os
import time
from pathlib import Path

from echoflow.listing import split_source
from echoflow.watch import Watcher, failure_url


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def write(path: Path, data: bytes, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def urls(files) -> list[str]:
    return [Path(f.url).name for f in files]


def test_settled_by_age_and_unchanged_since_the_last_listing(tmp_path):
    clock = Clock()
    w = Watcher(str(tmp_path / "raw" / "*.raw"), str(tmp_path / "out"), ".nc", settle=30, clock=clock)
    write(tmp_path / "raw" / "old.raw", b"x" * 10, age=600)
    fresh = write(tmp_path / "raw" / "fresh.raw", b"x" * 10)
    write(tmp_path / "raw" / "notes.txt", b"not raw", age=600)
    first = w.poll()
    assert urls(first.ready) == ["old.raw"] and [Path(u).name for u in first.waiting] == ["fresh.raw"]
    w.record(first.ready[0], "converted")
    # Grows while keeping an old mtime (cp -p): held back for as long as it changes.
    write(fresh, b"x" * 20, age=600)
    assert w.poll().ready == []
    assert urls(w.poll().ready) == ["fresh.raw"]  # unchanged since the last listing: settled
    clock.now += 1000
    w.record(w.poll().ready[0], "converted")
    assert w.poll().ready == [] and w.poll().waiting == []  # done: never again


def test_sidecar_decides_when_given(tmp_path):
    w = Watcher(str(tmp_path), str(tmp_path / "out"), ".zarr", settle=0, ready_suffix=".done")
    write(tmp_path / "a.raw", b"x", age=600)
    assert w.poll().ready == []
    write(tmp_path / "a.raw.done", b"")
    assert urls(w.poll().ready) == ["a.raw"]


def test_failures_recorded_and_retried(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    bad = write(raw / "bad.raw", b"junk", age=600)
    w = Watcher(str(raw), str(out), ".nc", settle=30)
    (f,) = w.poll().ready
    # A run that died (pod evicted) is not the file's fault: it stays new, up to a limit.
    for _ in range(2):
        w.record(f, "failed", "child run x ended Crashed", infrastructure=True)
        assert urls(w.poll().ready) == ["bad.raw"]
    w.record(f, "failed", "child run x ended Crashed", infrastructure=True)
    record = Path(failure_url(str(out / "bad.nc")))
    assert record.exists() and w.poll().ready == []

    again = Watcher(str(raw), str(out), ".nc", settle=30)  # a restart: the record decides
    poll = again.poll()
    assert poll.ready == [] and [e for _, e in poll.failed_before] == ["child run x ended Crashed"]

    retry = Watcher(str(raw), str(out), ".nc", settle=30, retry_failed=True)
    (f,) = retry.poll().ready
    retry.record(f, "converted")
    assert not record.exists()  # out of date once it converted
    write(bad, b"changed", age=600)
    assert retry.poll().ready == []  # done stays done, even when the file changes later


def test_split_source():
    assert split_source("/data/raw") == ("/data/raw", None, False)
    assert split_source("/data/raw/*.raw") == ("/data/raw", "/data/raw/*.raw", False)
    assert split_source("s3://b/cruise/**/*.raw") == ("s3://b/cruise", "s3://b/cruise/**/*.raw", True)
    assert split_source("s3://b/cruise/EK60/") == ("s3://b/cruise/EK60", None, False)


def test_recursive_glob_lists_once_and_matches_below(tmp_path):
    for rel in ("leg1/a.raw", "leg2/day3/b.raw", "leg2/c.txt"):
        write(tmp_path / "raw" / rel, b"x", age=600)
    w = Watcher(str(tmp_path / "raw" / "**" / "*.raw"), str(tmp_path / "out"), ".nc", settle=1)
    assert urls(w.poll().ready) == ["a.raw", "b.raw"]
