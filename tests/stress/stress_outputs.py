#!/usr/bin/env python
"""Stress the output protocol with real CLI processes (not part of `make test`: minutes long).

    python tests/stress/stress_outputs.py races  --rounds 10   # (a) concurrent writers
    python tests/stress/stress_outputs.py batches --conversions 400  # (b) -j 4 --overwrite batches

(a) Each round starts 3 `echoflow convert` processes on the same 8 sources and outputs at
random offsets (zarr / netCDF, local / S3 through a moto server on loopback; half the
rounds with --overwrite), then checks: every exit code 0, every marked output opens and
equals echopype's own conversion, no staging or lease left, one more run finds all 8
complete. (b) counts failures over batches of `-j 4 --overwrite`. Prints one line per
round and the totals; exits 1 when any damaged-complete output, failure or leftover is seen.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # zarr's format-3 notices on every reference read
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from reliability_util import EXE, assert_equals_reference, leftovers, reference  # noqa: E402
from samples import EK60_RAW  # noqa: E402
from util import ek60_copies  # noqa: E402

from echoflow import storage  # noqa: E402

KEYS = {"key": "stress-key", "secret": "stress-secret"}


def moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(100):
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=KEYS["key"],
        aws_secret_access_key=KEYS["secret"],
        region_name="us-east-1",
    ).create_bucket(Bucket="stress")
    return proc, url


def run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def races(rounds: int, work: Path, env: dict[str, str], s3_url: str) -> int:
    raws = ek60_copies(work / "raw", 8)
    refs = {fmt: reference(EK60_RAW, work, fmt) for fmt in ("zarr", "netcdf")}
    s3_opts = {**KEYS, "client_kwargs": {"endpoint_url": s3_url, "region_name": "us-east-1"}}
    bad = 0
    for i in range(rounds):
        fmt = ("zarr", "netcdf")[i % 2]
        remote = i % 4 >= 2
        overwrite = ["--overwrite"] if i % 3 == 2 else []
        prefix = f"s3://stress/round{i}" if remote else str(work / f"round{i}")
        opts = s3_opts if remote else {}
        base = ["convert", str(work / "raw" / "*.raw"), "-m", "EK60", "-o", prefix, "-f", fmt, "-j", "2"]
        start = time.monotonic()
        procs = []
        for w in range(3):
            procs.append(run(base + (overwrite if w else []), env))
            time.sleep(random.uniform(0, 2))
        codes = [p.wait(900) for p in procs]
        errors = [p.stderr.read()[-300:] for p, c in zip(procs, codes) if c != 0]
        ext = ".zarr" if fmt == "zarr" else ".nc"
        marked = damaged = 0
        for r in raws:
            out = f"{prefix}/{r.stem}{ext}"
            if storage.read_marker(out, opts) is None:
                continue
            marked += 1
            try:
                assert_equals_reference(out, refs[fmt], opts)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                damaged += 1
                print(f"  DAMAGED {out}: {exc}")
        left = [] if remote else leftovers(Path(prefix))
        if remote:
            fs, root = storage.filesystem(prefix, opts)
            left = [k for k in fs.find(root) if k.endswith(storage.LOCK_SUFFIX)]
        again = run(base, env)
        again_ok = again.wait(600) == 0 and "8 skipped" in again.stdout.read()
        bad += damaged + len(errors) + len(left) + (not again_ok)
        print(
            f"round {i + 1}: {fmt:6} {'s3' if remote else 'local':5} {'overwrite' if overwrite else 'plain':9} "
            f"exit codes {codes} marked {marked}/8 damaged {damaged} leftovers {len(left)} "
            f"rerun-all-complete {again_ok} {time.monotonic() - start:.0f} s",
            flush=True,
        )
        for e in errors:
            print("  FAILED:", e.replace("\n", " | "))
    print(f"races: {rounds} rounds, {rounds * 3} writers, problems {bad}")
    return bad


def batches(conversions: int, work: Path, env: dict[str, str]) -> int:
    ek60_copies(work / "raw", 8)
    done = failed = n = 0
    while done < conversions:
        n += 1
        p = run(
            [
                "convert",
                str(work / "raw" / "*.raw"),
                "-m",
                "EK60",
                "-o",
                str(work / "b"),
                "-f",
                "netcdf",
                "-j",
                "4",
                "--overwrite",
            ],
            env,
        )
        code = p.wait(900)
        out = p.stdout.read()
        done += 8
        if code != 0:
            failed += 1
            print(f"  batch {n} FAILED ({code}):", (out + p.stderr.read())[-400:].replace("\n", " | "))
        if n % 5 == 0:
            print(f"batches: {done} conversions, {failed} failed batches", flush=True)
    left = leftovers(work / "b")
    print(f"batches: {done} conversions in {n} batches of -j 4 --overwrite: {failed} failed, leftovers {len(left)}")
    return failed + len(left)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["races", "batches"])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--conversions", type=int, default=400)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="echoflow-stress-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(ECHOFLOW_HOME=str(work / "home"), COLUMNS="200")
    proc, url = moto()
    env.update(
        AWS_ACCESS_KEY_ID=KEYS["key"],
        AWS_SECRET_ACCESS_KEY=KEYS["secret"],
        AWS_DEFAULT_REGION="us-east-1",
        FSSPEC_S3_ENDPOINT_URL=url,
        AWS_ENDPOINT_URL=url,
    )
    try:
        bad = races(a.rounds, work, env, url) if a.what == "races" else batches(a.conversions, work, env)
    finally:
        proc.terminate()
        subprocess.run([EXE, "server", "stop"], env=env, capture_output=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
