"""A recipe fanned out as child runs: chunks of files, then the groups' outputs.

The children are runs of the same `run-recipe` deployment with a `part` parameter, sent
to the `conversions` work queue: on Kubernetes each is its own Job, and the queue's
concurrency limit caps how many run at once (the parent waits on the unlimited default
queue, so it never holds a child's slot). A child plans the recipe again from its text
(the same listing, the same fingerprints), runs the chains of its files or the outputs of
its groups, and records its results as a table artifact that the parent reads back; a
child that died without one is judged by the markers of its outputs.
"""

from __future__ import annotations

import json
from typing import Any, Optional, cast
from uuid import UUID

from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Completed, Failed, State

from echoflow.flows.common import run_logger
from echoflow.flows.cruise import chunked, wait_all
from echoflow.recipes.chain import failed
from echoflow.recipes.plan import FileChain, Job, Plan, is_complete, is_done
from echoflow.recipes.stages import StageResult
from echoflow.recipes.status import complete_groups, group_jobs
from echoflow.recipes.tasks import pool_size, run_chains, run_reduces

PART_KEY = "echoflow-recipe-part"
Part = dict[str, list[str]]  # {"files": [stems]} or {"groups": [names]}


def run_part(plan: Plan, records: dict[str, dict[str, Any]], overwrite: bool, part: Part) -> State:
    """What one child run does: its files' chains, or its groups' outputs."""
    workers = plan.recipe.concurrency
    if part.get("groups"):
        _, jobs = group_jobs(plan, records)
        done = complete_groups(plan, jobs, overwrite)
        todo = [j for j in jobs if j.item in part["groups"] and not is_done(j, done)]
        results = run_reduces(todo, pool_size(workers, len(todo)))
    else:
        wanted = set(part.get("files") or [])
        chains = [pending(c, records) for c in plan.chains if c.item in wanted]
        ready = [c for c in chains if c is not None]
        results = run_chains(ready, pool_size(workers, len(ready)))
    rows = [r.model_dump() for r in results]
    create_table_artifact(key=PART_KEY, table=rows, description=f"{len(rows)} outputs")
    bad = sum(r.status == "failed" for r in results)
    message = f"{len(results) - bad} outputs written, {bad} failed"
    return Failed(message=message, data=rows) if bad else Completed(message=message, data=rows)


def pending(chain: FileChain, records: dict[str, dict[str, Any]]) -> Optional[tuple[FileChain, list[str]]]:
    """(chain, its complete outputs) when some output is still to make, else None."""
    done = [j.output for j in chain.jobs() if is_done(j, records)]
    return (chain, done) if len(done) < len(chain.jobs()) else None


def part_results(run_id: UUID, jobs: list[Job]) -> list[StageResult]:
    """A child's results; for a child that left none, its outputs' markers decide."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[PART_KEY])
            )
        )
    if found:
        rows: Any = found[0].data
        return [StageResult(**r) for r in (json.loads(rows) if isinstance(rows, str) else rows)]
    why = f"child run {run.name} ended {run.state_name}: {(run.state.message if run.state else '') or 'no results'}"
    return [
        StageResult(stage=j.stage, item=j.item, status="computed", output=j.output)
        if is_complete(j)
        else failed(j, why)
        for j in jobs
    ]


def fan_out(
    params: dict[str, Any],
    parts: list[tuple[Part, list[Job]]],
    deployment: str,
    queue: Optional[str],
    job_variables: dict[str, Any],
    poll_seconds: float,
) -> list[StageResult]:
    """Start one child run per part, wait for all, gather their results."""
    if not parts:
        return []
    runs = [
        cast(  # called from a sync flow, run_deployment returns the run, not a coroutine
            FlowRun,
            run_deployment(
                name=deployment,
                parameters={**params, "part": part},
                timeout=0,
                work_queue_name=queue,
                job_variables=job_variables or None,
                tags=["echoflow-recipe"],
            ),
        )
        for part, _ in parts
    ]
    run_logger().info("started child runs of %s: %s", deployment, ", ".join(r.name for r in runs))
    wait_all([r.id for r in runs], poll_seconds)
    out: list[StageResult] = []
    for r, (_, jobs) in zip(runs, parts):
        out += part_results(r.id, jobs)
    return out


def file_parts(todo: list[tuple[FileChain, list[str]]], files_per_job: int) -> list[tuple[Part, list[Job]]]:
    return [
        ({"files": [c.item for c, _ in chunk]}, [j for c, done in chunk for j in c.jobs() if j.output not in done])
        for chunk in chunked(todo, files_per_job)
    ]


def group_parts(jobs: list[Job]) -> list[tuple[Part, list[Job]]]:
    names = list(dict.fromkeys(j.item for j in jobs))
    return [({"groups": [n]}, [j for j in jobs if j.item == n]) for n in names]


def this_deployment() -> Optional[str]:
    """`flow/deployment` of the deployment this flow run came from, if any."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    dep = ctx.flow_run.deployment_id if ctx and ctx.flow_run else None
    if dep is None:
        return None
    with get_client(sync_client=True) as client:
        d = client.read_deployment(dep)
        return f"{client.read_flow(d.flow_id).name}/{d.name}"
