"""Sv + MVBS over a batch of raw files: echoflow's recipe flow next to a plain echopype script.

    python benchmarks/recipe_bench.py              # 8 copies of the EK60 sample
    python benchmarks/recipe_bench.py --files 16 --concurrency 4

Both sides write the same outputs per file (converted zarr, Sv zarr, MVBS zarr). echoflow
runs on a throwaway ephemeral Prefect API (started before timing), once with its default
concurrency (one process per CPU for open_raw, threads after), once with one worker, and
once more over complete outputs (everything skipped). Prints wall times and ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECHOFLOW_TEST_DATA") or REPO / "data")
SAMPLE = DATA / "ek60" / "DY1801_EK60-D20180211-T164025.raw"
RANGE_BIN, PING_TIME_BIN = "20m", "20s"


def make_batch(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    files = []
    for i in range(n):
        p = folder / f"DY1801_EK60-D20180211-T{16 + i // 6:02d}{(i % 6) * 10:02d}25.raw"
        shutil.copyfile(SAMPLE, p)
        files.append(p)
    return files


def plain_script(files: list[Path], out: Path) -> None:
    """What one would write by hand with echopype, one file after another."""
    import echopype as ep

    for sub in ("converted", "Sv", "MVBS"):
        (out / sub).mkdir(parents=True)
    for f in files:
        ed = ep.open_raw(str(f), sonar_model="EK60")
        ed.to_zarr(str(out / "converted" / f"{f.stem}.zarr"), overwrite=True)
        sv = ep.calibrate.compute_Sv(ed)
        sv.to_zarr(out / "Sv" / f"{f.stem}.zarr", mode="w")
        mvbs = ep.commongrid.compute_MVBS(sv, range_bin=RANGE_BIN, ping_time_bin=PING_TIME_BIN)
        mvbs.to_zarr(out / "MVBS" / f"{f.stem}.zarr", mode="w")


def recipe(folder: Path, out: Path, concurrency: int) -> str:
    return f"""
name: bench
source: {{url: {folder}}}
sonar_model: EK60
concurrency: {concurrency}
quicklook: {{enabled: false}}
output: {{prefix: {out}}}
stages:
  - open_raw
  - compute_Sv
  - compute_MVBS: {{range_bin: {RANGE_BIN}, ping_time_bin: {PING_TIME_BIN}}}
"""


def timed(label: str, fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    print(f"  {label:<44} {seconds:7.1f} s", flush=True)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=0, help="echoflow workers (0: one per CPU)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if not SAMPLE.exists():
        print(f"sample missing: {SAMPLE} (set ECHOFLOW_TEST_DATA)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="echoflow-recipe-bench-"))
    os.environ["ECHOFLOW_HOME"] = str(work / "home")
    os.environ["ECHOFLOW_LOCAL_SERVER"] = "0"  # ephemeral API: nothing left running afterwards
    os.environ.pop("PREFECT_API_URL", None)
    try:
        from echoflow.home import use_embedded_default

        use_embedded_default(quiet=True)
        import warnings

        warnings.filterwarnings("ignore")
        from prefect import flow

        from echoflow._echopype import load
        from echoflow.workers import available_cpus
        from echoflow.recipes.flow import run_recipe

        load()  # both sides start with echopype imported

        @flow
        def warm_up() -> None:
            """Start Prefect's API before timing."""

        warm_up()
        files = make_batch(work / "raw", args.files)
        mb = sum(f.stat().st_size for f in files) / 1e6
        cpus = available_cpus()
        print(f"{len(files)} EK60 files, {mb:.1f} MB; {cpus} CPU(s); open_raw → compute_Sv → compute_MVBS "
              f"({RANGE_BIN}, {PING_TIME_BIN})")

        def echoflow_run(out: Path, concurrency: int) -> None:
            state = run_recipe(recipe=recipe(work / "raw", out, concurrency), return_state=True)
            if not state.is_completed():
                raise SystemExit(f"echoflow run failed: {state.message}")

        plain = timed("plain echopype script (sequential)", plain_script, files, work / "plain")
        par = timed(f"echoflow run-recipe (concurrency {args.concurrency or cpus})",
                    echoflow_run, work / "ef", args.concurrency)
        one = timed("echoflow run-recipe (concurrency 1)", echoflow_run, work / "ef1", 1)
        again = timed("echoflow run-recipe again (all complete: skipped)", echoflow_run, work / "ef", 0)
        print(f"ratio echoflow / plain: {par / plain:.2f} (concurrency {args.concurrency or cpus}), "
              f"{one / plain:.2f} (concurrency 1); re-run {again / plain:.2f}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
