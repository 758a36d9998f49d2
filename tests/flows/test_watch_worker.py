"""The watch deployment run by a real Prefect worker: the watch run fans new settled files out as
child runs of the batch deployment, which the same worker runs; two runs started at once
convert each file once (concurrency limit 1, a run due while one runs is cancelled).

A process worker stands in for the Kubernetes worker here (the flow runs as processes, not
Jobs); the Job path itself is the pod-replay e2e's."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.deployments import run_deployment
from procs import process_worker
from samples import EK60_RAW
from util import EK60_TIMES

from echoflow.deploy import deploy

POOL, NAME = "watch-process", "proc"


def process_pool() -> None:
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["image"] = {"type": "string"}  # what echoflow deploy sets
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=template))


def runs_of(deployment: str) -> list:
    with get_client(sync_client=True) as client:
        d = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id]))
        )


def wait_final(ids: list, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state and r.state.is_final() for r in runs):
                return runs
            time.sleep(2)
    raise AssertionError(f"not final in {timeout} s: {[(r.name, r.state_name) for r in runs]}")


@pytest.mark.slow
def test_watch_deployment_fans_out_through_a_worker(prefect_server, tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    names = [f"DY1801_EK60-{t}.raw" for t in EK60_TIMES[:2]]
    for n in names:
        shutil.copyfile(EK60_RAW, raw / n)
        os.utime(raw / n, (time.time() - 600, time.time() - 600))
    monkeypatch.setenv(
        "ECHOFLOW_WATCH",
        json.dumps(
            {
                "interval": 3600,
                "parameters": {
                    "source": str(raw / "*.raw"),
                    "sonar_model": "EK60",
                    "output_prefix": str(out),
                    "settle_seconds": 30,
                    "concurrency": 1,
                    "files_per_job": 1,
                    "batch_deployment": f"convert-batch/{NAME}",
                    "poll_seconds": 2,
                },
            }
        ),
    )
    process_pool()
    deploy(POOL, "echoflow:process", deployment_name=NAME, flows=["convert-batch", "watch-prefix"])

    with process_worker(POOL, tmp_path) as log:
        # Two runs at once, as when a schedule fires while the previous run is still going.
        ids = [run_deployment(f"watch-prefix/{NAME}", timeout=0).id for _ in range(2)]
        runs = wait_final(ids, timeout=600)
        (idle,) = wait_final([run_deployment(f"watch-prefix/{NAME}", timeout=0).id], timeout=300)
    states = sorted(r.state_name for r in runs)
    print(f"\ntwo watch runs at once: {states}")
    worker_log = log.read_text()[-3000:]
    assert "Completed" in states, (states, worker_log)
    assert all(s in ("Completed", "Cancelled") for s in states), (states, worker_log)
    assert idle.state.is_completed() and "nothing new" in idle.state.message
    with get_client(sync_client=True) as client:
        pending = min(s.timestamp for s in client.read_flow_run_states(idle.id) if s.type.value == "PENDING")
    print(
        f"idle watch run as a process: {(idle.end_time - pending).total_seconds():.1f} s from the worker "
        f"taking it to its end (process start included), {idle.total_run_time.total_seconds():.1f} s in the flow"
    )
    children = runs_of(f"convert-batch/{NAME}")
    assert len(children) == 2 and all(c.state.is_completed() for c in children)  # one per file, once
    for n in names:
        marker = out / n.replace(".raw", ".nc.echoflow.json")
        assert json.loads(marker.read_text())["source_url"].endswith(n)
