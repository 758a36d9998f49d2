"""`run-recipe` from a deployment fans out: chunks of files, then the group, as child runs.

Real Prefect server, a real process worker (`prefect worker start --type process`) on a
work pool with echoflow's queues and deployment spec (`echoflow.deploy`): the parent runs
on the default queue, its children on the `conversions` queue whose concurrency limit
(1 here) must keep them one at a time. On Kubernetes the same children are Jobs.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import xarray as xr
from prefect_api import artifacts
from procs import process_worker
from recipe_samples import adjacent_copies, group_recipe

from echoflow import deploy

# slow: a real process worker runs the parent and each child run as its own process
pytestmark = pytest.mark.slow


@pytest.fixture
def pool(prefect_server, tmp_path):
    """A process work pool with echoflow's queues (conversions limited to 1), the run-recipe
    deployment as `echoflow deploy` makes it, and a worker polling it every second."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"recipes-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        deploy.ensure_queue(client, name, 1)
        spec = {**deploy.desired("run-recipe", deploy.FLOWS["run-recipe"], name, "unused"), "job_variables": {}}
        deploy.ensure_deployment(client, "run-recipe", name, spec)
    with process_worker(name, tmp_path):
        yield name


def children(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )


def test_recipe_fans_out_as_child_runs_within_the_queue_limit(pool: str, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    raws = adjacent_copies(tmp_path / "raw", [0, 72, 144])
    out = tmp_path / "out"
    recipe = group_recipe(raws[0].parent, out, concurrency=1)
    params = {"recipe": recipe, "files_per_job": 2, "poll_seconds": 1}
    parent = run_deployment(f"run-recipe/{pool}", parameters=params, timeout=600, poll_interval=2)
    assert parent.state.is_completed(), parent.state.message
    assert parent.work_queue_name == "default"  # waiting parents never hold a conversions slot

    kids = sorted(children(parent.id), key=lambda r: r.start_time)
    assert [k.parameters["part"] for k in kids] == [
        {"files": [raws[0].stem, raws[1].stem]},
        {"files": [raws[2].stem]},
        {"groups": ["dy"]},
    ]
    assert all(k.work_queue_name == "conversions" and k.state.is_completed() for k in kids)
    for a, b in zip(kids, kids[1:]):  # the queue's limit of 1: one child at a time
        assert a.end_time <= b.start_time

    ours = xr.open_zarr(out / "compute_MVBS" / "dy.zarr")
    assert ours.sizes["channel"] == 5 and int(ours["ping_count"].sum()) == 3 * 42
    # the reduce read the per-file outputs, which the first children wrote
    assert all((out / "compute_MVBS" / f"{p.stem}.zarr.echoflow.json").exists() for p in raws)

    again = run_deployment(f"run-recipe/{pool}", parameters=params, timeout=600, poll_interval=2)
    assert again.state.is_completed(), again.state.message
    assert children(again.id) == []  # complete: nothing fanned out
    [table] = [a for a in artifacts(again.id) if a.key == "echoflow-recipe-dy"]
    assert {r["status"] for r in json.loads(table.data)} == {"skipped"}
