"""Benchmark helpers: sample copies, timed subprocesses with process-tree peak memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECHOFLOW_TEST_DATA") or REPO / "data")
EK60 = DATA / "ek60" / "DY1801_EK60-D20180211-T164025.raw"
BIN = Path(sys.executable).parent
# Memory sampling interval of the timing rounds; the memory runs sample every 0.05 s.
TIMING_INTERVAL = 0.25


def ek60_copies(folder: Path, n: int) -> list[Path]:
    """n copies of the EK60 sample, named with the instrument's -DYYYYMMDD-THHMMSS convention."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        hh, mm = divmod(i * 10, 60)
        p = folder / f"DY1801_EK60-D20180211-T{16 + hh % 8:02d}{mm:02d}{i // 48:02d}.raw"
        if not p.exists():
            shutil.copyfile(EK60, p)
        out.append(p)
    return out


@dataclass
class Run:
    seconds: float
    peak_mb: float
    returncode: int


def _memory(p: psutil.Process) -> int:
    """PSS where Linux reports it: worker processes forked from one server share its pages,
    which summed RSS would count once per worker. From smaps_rollup (one line per process,
    half the cost of psutil's full smaps walk: sampling must not slow what it measures)."""
    try:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return p.memory_info().rss


def timed(cmd: list[str], env: dict | None = None, interval: float = 0.05) -> Run:
    """Wall time and the peak of summed memory (PSS, else RSS) over the process and all its
    descendants, sampled every `interval` s (each sample costs ~2 ms of CPU per process:
    timing rounds pass a longer interval, memory runs keep the short one)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    try:
                        rss += _memory(p)
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode not in (0,):
        sys.stderr.write(err[-2000:])
    return Run(seconds, peak[0], proc.returncode)


# Array work like a chain's (calibration, binning): bound by memory bandwidth, which two
# processes share.
ARRAY_WORK = "import numpy as np; a = np.random.rand(3000, 3000)\nfor _ in range(30): np.log10(a * a + 1.0).sum()"


def two_at_once() -> float:
    """How much slower array work runs with a second copy beside it than alone: 1.0 on two
    cores that share nothing; this bounds what any 2-process scheme gains here."""

    def run(n: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", ARRAY_WORK]) for _ in range(n)]
        for p in procs:
            p.wait()
        return time.perf_counter() - start

    return min(run(2) for _ in range(2)) / min(run(1) for _ in range(2))


@contextmanager
def busy(n: int) -> Iterator[None]:
    """`n` processes spinning at normal priority for the duration: a busy machine that is
    the same for every variant, unlike whatever else happens to run."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def fastest(variants: dict[str, Callable[[], list[str]]], env: dict, repeat: int, spinning: int = 0) -> dict[str, Run]:
    """Interleaved rounds of every variant; the fastest run of each counts (other work on a
    shared machine only ever adds time), a failed one always shows."""
    best: dict[str, Run] = {}
    with busy(spinning):
        for _ in range(max(1, repeat)):
            for name, cmd in variants.items():
                r = timed(cmd(), env, interval=TIMING_INTERVAL)
                if name not in best or r.seconds < best[name].seconds or r.returncode:
                    best[name] = r
    return best


Check = tuple[str, float, str, bool]  # name, value, target as shown, met


def report(header: str, spinning: int, rows: list[tuple[str, Run]], checks: list[Check], *notes: str) -> None:
    """The table of runs and ratios; exits non-zero when a variant failed."""
    busy_note = f"; busy: {spinning} spinning processes during the rounds" if spinning else ""
    print(f"\n{header}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}{busy_note}")
    print(f"{'variant':28} {'wall s':>8} {'peak MB':>9} {'exit':>5}")
    for name, r in rows:
        print(f"{name:28} {r.seconds:8.2f} {r.peak_mb:9.0f} {r.returncode:5d}")
    print(f"\n{'ratio':32} {'value':>7} {'target':>8}")
    for name, value, target, ok in checks:
        print(f"{name:32} {value:7.2f} {target:>8}  {('ok' if ok else 'MISSED') if target else ''}")
    for note in notes:
        print(note)
    if any(r.returncode for _, r in rows):
        sys.exit("a variant failed; see stderr above")
