"""`echoflow watch` on a local folder: real process, real Prefect server, real echopype.

Files land while it runs (one written in pieces over several seconds), it is stopped with
SIGTERM and restarted mid-cruise, and a bad file is reported once.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from samples import EK60_RAW
from util import EK60_TIMES, assert_matches_direct, junk_file

# slow: a real `echoflow watch` process with files landing over time and its settle waits
pytestmark = pytest.mark.slow

INTERVAL, SETTLE = 1.0, 3.0
CONVERTED = re.compile(r"(converted|skipped) (\S+) -> .*complete ([\d.]+) s after settling")


def name(i: int) -> str:
    return f"DY1801_EK60-{EK60_TIMES[i]}.raw"


def watch_args(source: str, out: Path, *extra: str) -> list[str]:
    return [
        source,
        "-m",
        "EK60",
        "-o",
        str(out),
        "-f",
        "zarr",
        "--interval",
        str(INTERVAL),
        "--settle",
        str(SETTLE),
        "--heartbeat",
        "2",
        "-j",
        "1",
        *extra,
    ]


def converted(w) -> dict[str, list[float]]:
    """file name -> the settle-to-complete latency of each time it was converted."""
    found: dict[str, list[float]] = {}
    for _, line in list(w.lines):
        m = CONVERTED.search(line)
        if m and m.group(1) == "converted":
            found.setdefault(m.group(2), []).append(float(m.group(3)))
    return found


def write_in_pieces(path: Path, pieces: int, pause: float) -> list[float]:
    """Write the EK60 sample into `path` the way an echosounder records: a piece at a time."""
    data = EK60_RAW.read_bytes()
    step = -(-len(data) // pieces)
    times = []
    with path.open("wb") as f:
        for i in range(pieces):
            f.write(data[i * step : (i + 1) * step])
            f.flush()
            times.append(time.time())
            if i < pieces - 1:
                time.sleep(pause)
    return times


def test_files_landing_over_time_and_one_growing(start_watch, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    w = start_watch(*watch_args(str(raw / "*.raw"), out))
    w.wait_for(lambda line: "watching" in line)
    shutil.copyfile(EK60_RAW, raw / name(0))
    times: list[float] = []
    writer = threading.Thread(target=lambda: times.extend(write_in_pieces(raw / name(1), 5, 1.5)))
    writer.start()  # 6 s of writing, never a pause as long as the settle time
    time.sleep(2)
    shutil.copyfile(EK60_RAW, raw / name(2))
    writer.join()
    w.wait_for(lambda line: len(converted(w)) == 3, timeout=180)
    w.wait_for(lambda line: "idle:" in line and "3 done" in line)

    done = converted(w)
    assert sorted(done) == [name(0), name(1), name(2)] and all(len(v) == 1 for v in done.values())
    assert "failed" not in w.text().replace("0 failed", "")  # the growing file was never taken early
    # It was taken only after it settled: complete after its last write + settle.
    finished = w.wait_for(lambda line: f"converted {name(1)}" in line)
    assert finished >= times[-1] + SETTLE
    print("\nsettled -> output complete, s:", {n: v[0] for n, v in done.items()})
    assert_matches_direct(str(out / f"{Path(name(1)).stem}.zarr"), raw / name(1), "EK60", tmp_path)
    assert w.stop(signal.SIGTERM) == 143
    assert "stopped (SIGTERM)" in w.text()


def test_restart_mid_cruise_nothing_twice_nothing_missed(start_watch, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for i in range(4):
        shutil.copyfile(EK60_RAW, raw / name(i))
    first = start_watch(*watch_args(str(raw), out))
    first.wait_for(lambda line: len(converted(first)) >= 1, timeout=180)
    assert first.stop(signal.SIGTERM) == 143
    # The one worker finishes its file within the grace period; files not started stay new.
    markers = {p.name: p.read_text() for p in out.glob("*.echoflow.json")}
    assert len(markers) >= 1 and len(markers) == len(converted(first))
    assert not list(out.glob("*.echoflow-failed.json"))
    for i in (4, 5):  # more files land while nothing watches
        shutil.copyfile(EK60_RAW, raw / name(i))

    second = start_watch(*watch_args(str(raw), out))
    second.wait_for(lambda line: len(converted(second)) == 6 - len(markers), timeout=300)
    second.wait_for(lambda line: "idle:" in line and "6 done" in line)
    assert second.stop(signal.SIGINT) == 130

    once = converted(first)
    twice = converted(second)
    assert not set(once) & set(twice), "a file was converted twice"
    assert sorted({**once, **twice}) == [name(i) for i in range(6)], "a file was missed"
    assert f"{len(markers)} file(s) complete already" in second.text()
    for marker, text in markers.items():  # untouched by the second run
        assert (out / marker).read_text() == text
    assert len(list(out.glob("*.zarr.echoflow.json"))) == 6


def test_bad_file_reported_once_and_retried_when_it_changes(start_watch, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    bad = junk_file(raw, name(0))
    first = start_watch(*watch_args(str(raw / "*.raw"), out))
    first.wait_for(lambda line: f"failed {name(0)}" in line, timeout=180)
    for _ in range(3):  # several more listings
        first.wait_for(lambda line: "idle:" in line and "1 failed" in line)
        time.sleep(2)
    assert first.count(lambda line: f"failed {name(0)}" in line) == 1
    record = json.loads((out / f"{bad.stem}.zarr.echoflow-failed.json").read_text())
    assert record["size"] == bad.stat().st_size and record["error"]
    assert f"failed {name(0)}: {record['error']}" in first.text()  # the reason, as reported
    assert first.stop(signal.SIGTERM) == 143

    second = start_watch(*watch_args(str(raw / "*.raw"), out))
    second.wait_for(lambda line: "failed before, unchanged since" in line)
    second.wait_for(lambda line: "idle:" in line)
    assert second.count(lambda line: f"failed {name(0)}" in line) == 0  # not tried again
    shutil.copyfile(EK60_RAW, bad)  # the ship sends it again, whole
    second.wait_for(lambda line: f"converted {name(0)}" in line, timeout=180)
    assert not (out / f"{bad.stem}.zarr.echoflow-failed.json").exists()
    assert second.stop(signal.SIGTERM) == 143
