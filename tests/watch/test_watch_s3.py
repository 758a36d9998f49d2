"""Watching an s3:// prefix on the local S3 server: conversions, and what an idle poll costs,
counted in the S3 server's own request log."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from samples import EK60_RAW
from util import EK60_TIMES

from echoflow.flows.watch import watch_prefix

CONVERTED = re.compile(r"converted (\S+) -> .*complete ([\d.]+) s after settling")
REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/? ]+)')


@pytest.fixture
def s3_log(s3_server, tmp_path_factory) -> Path:
    """The request log of the session's S3 server (one line per request)."""
    (log,) = Path(tmp_path_factory.getbasetemp()).glob("s3[0-9]*/moto.log")
    return log


def new_bucket(endpoint: str, options: dict, name: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
    ).create_bucket(Bucket=name)


def requests_to(log: Path, bucket: str) -> list[str]:
    lines = log.read_text().splitlines()
    return [ln.split('"')[1] for ln in lines if (m := REQUEST.search(ln)) and m.group(2) == bucket]


def test_watch_s3_prefix_and_idle_cost(start_watch, s3_server, s3_env, s3_options, s3_log):
    import s3fs

    bucket = "ship-watch"
    new_bucket(s3_server, s3_options, bucket)
    fs = s3fs.S3FileSystem(**s3_options)
    names = [f"DY1801_EK60-{t}.raw" for t in EK60_TIMES[:3]]
    for n in names[:2]:
        fs.put_file(str(EK60_RAW), f"{bucket}/DY1801/raw/{n}")
    w = start_watch(
        f"s3://{bucket}/DY1801/raw/",
        "-m",
        "EK60",
        "-o",
        f"s3://{bucket}/DY1801/out",
        "-f",
        "netcdf",
        "--interval",
        "1",
        "--settle",
        "2",
        "--heartbeat",
        "0",
        "-j",
        "1",
        env=s3_env,
    )
    w.wait_for(lambda line: w.count(lambda ln: CONVERTED.search(ln) is not None) == 2, timeout=240)

    # Idle: every poll prints one line; count the server's requests across five polls.
    w.wait_for(lambda line: "idle:" in line)
    seen = w.count(lambda ln: "idle:" in ln)
    before = len(requests_to(s3_log, bucket))
    w.wait_for(lambda line: w.count(lambda ln: "idle:" in ln) >= seen + 5)
    during = requests_to(s3_log, bucket)[before:]
    polls = w.count(lambda ln: "idle:" in ln) - seen
    print(f"\nS3 requests per idle poll (CLI): {len(during) / polls:.2f} over {polls} polls: {set(during)}")
    assert len(during) <= polls and all(r.startswith("GET ") and "list-type=2" in r for r in during)  # listings only

    fs.put_file(str(EK60_RAW), f"{bucket}/DY1801/raw/{names[2]}")  # lands while it runs
    w.wait_for(lambda line: f"converted {names[2]}" in line, timeout=180)
    lags = [float(m.group(2)) for m in map(CONVERTED.search, w.text().splitlines()) if m and m.group(1) == names[2]]
    print(f"settled -> output complete: {lags[0]:.1f} s (interval 1 s)")
    assert w.stop(signal.SIGTERM) == 143
    assert w.count(lambda ln: CONVERTED.search(ln) is not None) == 3
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/DY1801/out") if p.endswith(".nc")) == sorted(
        n.replace(".raw", ".nc") for n in names
    )


def test_scheduled_run_idle_cost_on_s3(prefect_server, s3_server, s3_options, s3_log):
    import s3fs

    bucket = "ship-watch-scheduled"
    new_bucket(s3_server, s3_options, bucket)
    fs = s3fs.S3FileSystem(**s3_options)
    fs.put_file(str(EK60_RAW), f"{bucket}/raw/DY1801_EK60-{EK60_TIMES[0]}.raw")
    time.sleep(2)
    kw = dict(
        source=f"s3://{bucket}/raw/*.raw",
        sonar_model="EK60",
        output_prefix=f"s3://{bucket}/out",
        settle_seconds=1,
        concurrency=1,
        batch_deployment=None,
        input_storage_options=s3_options,
        output_storage_options=s3_options,
    )
    first = watch_prefix(**kw, return_state=True)
    assert first.is_completed(), first.message
    before = len(requests_to(s3_log, bucket))
    idle = watch_prefix(**kw, return_state=True)
    assert idle.is_completed() and "nothing new" in idle.message
    during = requests_to(s3_log, bucket)[before:]
    print(f"\nS3 requests per idle scheduled run: {len(during)}: {during}")
    assert len(during) == 2  # read the watch state, list the prefix; nothing written
