"""`echoflow watch` on an s3:// prefix of the local S3 server: conversions, and what an idle
poll costs, counted in the S3 server's own request log."""

from __future__ import annotations

import re
import signal

import pytest
from samples import EK60_RAW
from util import EK60_TIMES

# slow: a real `echoflow watch` process on S3, counted over several idle polls
pytestmark = pytest.mark.slow

CONVERTED = re.compile(r"converted (\S+) -> .*complete ([\d.]+) s after settling")


def test_watch_s3_prefix_and_idle_cost(start_watch, new_bucket, s3_env, s3_options, s3_log):
    import s3fs

    bucket = new_bucket("ship-watch")
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
    before = len(s3_log.requests(bucket))
    w.wait_for(lambda line: w.count(lambda ln: "idle:" in ln) >= seen + 5)
    during = s3_log.requests(bucket)[before:]
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
