"""Batch conversion: plain echopype loop vs hand-written process pool vs `echoflow convert`.

    python benchmarks/convert_bench.py [--files 24] [--format zarr] [--repeat 5] [--busy N]

Every variant runs as a new process on the same copies of the EK60 sample and writes
the same outputs; wall time and peak memory (summed over the process tree) are printed
with their ratios. Targets (2 cores): echoflow >= 1.6x faster than the loop and within
1.15x of the pool (1.2x before the orchestration cuts); one file within 3 s of a plain script; memory(48 files) <= 1.25x memory(12).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import BIN, ek60_copies, fastest, report, timed, two_at_once  # noqa: E402

LOOP = """
import sys, echopype as ep
fmt, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
for f in files:
    ed = ep.open_raw(f, sonar_model="EK60")
    name = out + "/" + f.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    ed.to_zarr(name + ".zarr", overwrite=True) if fmt == "zarr" else ed.to_netcdf(name + ".nc", overwrite=True)
"""

POOL = """
import sys
from concurrent.futures import ProcessPoolExecutor

def one(args):
    import echopype as ep
    f, fmt, out = args
    ed = ep.open_raw(f, sonar_model="EK60")
    name = out + "/" + f.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    ed.to_zarr(name + ".zarr", overwrite=True) if fmt == "zarr" else ed.to_netcdf(name + ".nc", overwrite=True)

if __name__ == "__main__":
    fmt, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(one, [(f, fmt, out) for f in files]))
"""


def fresh(path: Path) -> str:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--format", choices=("zarr", "netcdf"), default="zarr")
    ap.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="rounds of the timed variants, interleaved; the fastest round counts "
        "(other work on a shared machine only ever adds time)",
    )
    ap.add_argument("--busy", type=int, default=0, help="processes spinning during the timed rounds (a busy machine)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="echoflow-bench-"))
    py = sys.executable
    echoflow = str(BIN / "echoflow")
    env = {"ECHOFLOW_HOME": str(work / "home"), "PYTHONWARNINGS": "ignore"}
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    os.environ.clear()
    os.environ.update(env_clean)
    try:
        files = [str(p) for p in ek60_copies(work / "raw", max(48, args.files))]
        batch = files[: args.files]
        ef = [echoflow, "convert", "-m", "EK60", "-f", args.format, "-j", "2"]
        # Start the local Prefect API once (a later command reuses it), as on a user's laptop.
        timed([echoflow, "convert", files[0], "-m", "EK60", "-o", fresh(work / "warm")], env)

        variants = {
            "(a) echopype loop": lambda: [py, "-c", LOOP, args.format, fresh(work / "a"), *batch],
            "(b) process pool": lambda: [py, "-c", POOL, args.format, fresh(work / "b"), *batch],
            "(c) echoflow convert": lambda: [*ef, "-o", fresh(work / "c"), *batch],
            "1 file: echopype script": lambda: [py, "-c", LOOP, args.format, fresh(work / "d"), files[0]],
            "1 file: echoflow convert": lambda: [*ef, "-o", fresh(work / "e"), files[0]],
        }
        best = fastest(variants, env, args.repeat, args.busy)
        rows = list(best.items())
        loop, pool, flow = best["(a) echopype loop"], best["(b) process pool"], best["(c) echoflow convert"]
        one_plain, one_flow = best["1 file: echopype script"], best["1 file: echoflow convert"]
        m12 = timed([*ef, "-o", fresh(work / "m12"), *files[:12]], env)
        m48 = timed([*ef, "-o", fresh(work / "m48"), *files[:48]], env)
        rows += [("echoflow, 12 files", m12), ("echoflow, 48 files", m48)]
        timed([echoflow, "server", "stop"], env)

        checks = [
            ("speed-up of (c) over (a)", loop.seconds / flow.seconds, ">= 1.6", loop.seconds / flow.seconds >= 1.6),
            ("(c) / (b) wall time", flow.seconds / pool.seconds, "<= 1.15", flow.seconds / pool.seconds <= 1.15),
            (
                "1 file: echoflow - script (s)",
                one_flow.seconds - one_plain.seconds,
                "<= 3.0",
                one_flow.seconds - one_plain.seconds <= 3.0,
            ),
            ("peak memory 48 / 12 files", m48.peak_mb / m12.peak_mb, "<= 1.25", m48.peak_mb / m12.peak_mb <= 1.25),
        ]
        header = f"fastest of {args.repeat} interleaved rounds; {args.files} copies of {Path(files[0]).name.split('-D')[0]} (EK60, 1.2 MB) -> {args.format}"
        machine = f"array work, two processes at once: each {two_at_once():.2f}x as long as alone"
        report(header, args.busy, rows, checks, machine)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
