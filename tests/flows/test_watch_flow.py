"""The scheduled `watch-prefix` flow against the real Prefect server: each run lists once, fans
the new settled files out through convert-cruise (child runs), and remembers the rest."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from samples import EK60_RAW
from util import EK60_TIMES, junk_file

from echoflow.flows.watch import watch_prefix
from echoflow.storage import read_marker

SETTLE = 20.0


def aged(path: Path, seconds: float = 600) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def statuses(state) -> dict[str, str]:
    return {Path(f["source"]).name: f["status"] for f in state.result(raise_on_failure=False)["files"]}


def children(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(operator="and_", any_=[flow_run_id])
            )
        )


@pytest.mark.slow  # three watch runs, each fanning out child flow runs
def test_scheduled_runs_take_each_settled_file_once(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    names = [f"DY1801_EK60-{t}.raw" for t in EK60_TIMES[:3]]
    for n in names[:2]:
        aged(Path(shutil.copyfile(EK60_RAW, raw / n)))
    data = EK60_RAW.read_bytes()
    (raw / names[2]).write_bytes(data[: len(data) // 2])  # being recorded: too new to be settled
    kw = dict(
        source=str(raw / "*.raw"),
        sonar_model="EK60",
        output_prefix=str(out),
        output_type="zarr",
        settle_seconds=SETTLE,
        concurrency=1,
        files_per_job=1,
        batch_deployment=None,
    )

    first = watch_prefix(**kw, return_state=True)
    assert first.is_completed(), first.message
    assert statuses(first) == {names[0]: "converted", names[1]: "converted"}
    (cruise,) = children(first.state_details.flow_run_id)  # the fan-out: convert-cruise ...
    assert cruise.state.is_completed()
    assert len(children(cruise.id)) == 2  # ... one convert-batch child per file (files_per_job=1)
    (memory,) = out.glob(".echoflow-watch-*.json")
    files = json.loads(memory.read_text())["files"]
    assert files[str(raw / names[2])]["status"] == "seen" and files[str(raw / names[0])]["status"] == "done"

    with (raw / names[2]).open("ab") as f:  # still being written: changed since the last listing ...
        f.write(data[len(data) // 2 :])
    aged(raw / names[2])  # ... which holds it back even with an old mtime (a copy that keeps it)
    idle = watch_prefix(**kw, return_state=True)
    assert idle.is_completed() and "nothing new and settled (1 not settled yet)" in idle.message
    assert children(idle.state_details.flow_run_id) == []

    third = watch_prefix(**kw, return_state=True)  # unchanged since the last listing, and old: settled
    assert statuses(third) == {names[2]: "converted"}
    for n in names:
        assert read_marker(str(out / n.replace(".raw", ".zarr")), {}) is not None


@pytest.mark.slow  # six watch runs; the decisions alone: tests/unit/test_watcher.py
def test_bad_file_fails_once_until_it_changes_or_is_retried(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    bad = aged(junk_file(raw))
    kw = dict(
        source=str(raw),
        sonar_model="EK60",
        output_prefix=str(out),
        settle_seconds=30,
        concurrency=1,
        batch_deployment=None,
    )
    first = watch_prefix(**kw, return_state=True)
    assert first.name == "Failed" and statuses(first) == {bad.name: "failed"}
    record = json.loads((out / f"{bad.stem}.nc.echoflow-failed.json").read_text())
    assert record["size"] == bad.stat().st_size and record["error"]

    again = watch_prefix(**kw, return_state=True)
    assert again.is_completed() and "nothing new" in again.message  # reported once, not retried

    retried = watch_prefix(**kw, retry_failed=True, return_state=True)
    assert statuses(retried) == {bad.name: "failed"}

    aged(Path(shutil.copyfile(EK60_RAW, bad)))  # fixed upstream: it changes
    changed = watch_prefix(**kw, return_state=True)  # changed since the last listing: not settled yet
    assert changed.is_completed() and "1 not settled yet" in changed.message
    fixed = watch_prefix(**kw, return_state=True)
    assert fixed.is_completed() and statuses(fixed) == {bad.name: "converted"}
    assert not (out / f"{bad.stem}.nc.echoflow-failed.json").exists()


@pytest.mark.slow  # a cost measurement (S3 requests of an idle run)
def test_scheduled_run_idle_cost_on_s3(new_bucket, s3_options, s3_log):
    """An idle scheduled run on an s3:// prefix, counted in the S3 server's request log."""
    import s3fs

    bucket = new_bucket("ship-watch-scheduled")
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
    before = len(s3_log.requests(bucket))
    idle = watch_prefix(**kw, return_state=True)
    assert idle.is_completed() and "nothing new" in idle.message
    during = s3_log.requests(bucket)[before:]
    print(f"\nS3 requests per idle scheduled run: {len(during)}: {during}")
    assert len(during) == 2  # read the watch state, list the prefix; nothing written
