"""`convert_cruise`: a cruise fanned out as child flow runs of the batch deployment.

On Kubernetes each child run is its own Job (the worker starts one per flow run), so
machines are added by the cluster, and the work pool's concurrency limit caps how many
Jobs run at once. The parent only plans, waits and gathers: each child records its
per-file table as an artifact, which the parent reads back through the API.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional, cast
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import State

from echoflow import convert, storage
from echoflow.flows.arguments import CHILD_CONCURRENCY, documented, given
from echoflow.flows.batch import convert_batch, finish, plan
from echoflow.flows.common import run_logger, warn_on_credentials
from echoflow.flows.runs import cruise_run_name, echoflow_flow
from echoflow.params import BatchRequest, ConvertRequest, OutputType
from echoflow.report import FileResult, Summary


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def child_summary(flow_run_id: UUID, chunk: list[ConvertRequest]) -> Summary:
    """A child's per-file table; if it died before writing one, its files' own markers decide."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=["echoflow-summary"]),
            )
        )
    if found:
        rows: Any = found[0].data
        return Summary(files=[FileResult(**r) for r in (json.loads(rows) if isinstance(rows, str) else rows)])
    why = f"child run {run.name} ended {run.state_name}: {(run.state.message if run.state else '') or 'no summary'}"
    files = []
    for req in chunk:
        done = convert.existing(req.model_copy(update={"overwrite": False}))
        files.append(
            FileResult(
                source=storage.public_url(req.raw_file),
                output=storage.public_url(convert.resolve_output(req)),
                status="converted" if done else "failed",
                bytes=(done or {}).get("bytes"),
                error=None if done else why,
            )
        )
    return Summary(files=files)


def wait_all(ids: list[UUID], poll_seconds: float) -> None:
    """Until every child run is final: one filtered read per page of ids per poll."""
    pending = list(ids)
    with get_client(sync_client=True) as client:
        while pending:
            still = []
            for i in range(0, len(pending), 200):
                page = pending[i : i + 200]
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
                )
                final = {r.id for r in runs if r.state is not None and r.state.is_final()}
                still += [fid for fid in page if fid not in final]
            pending = still
            if pending:
                time.sleep(poll_seconds)


@echoflow_flow(name="convert-cruise", flow_run_name=cruise_run_name, log_prints=True)
@documented(concurrency=CHILD_CONCURRENCY)
def convert_cruise(
    sources: list[str],
    sonar_model: str,
    output_prefix: str,
    output_type: OutputType = "netcdf",
    xml_path: Optional[str] = None,
    convert_params: Optional[dict[str, Any]] = None,
    files_per_job: int = 50,
    concurrency: int = 0,
    overwrite: bool = False,
    input_storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated
    output_storage_options: dict[str, Any] = {},  # noqa: B006
    batch_deployment: Optional[str] = "convert-batch/echoflow",
    job_variables: dict[str, Any] = {},  # noqa: B006
    poll_seconds: float = 10.0,
) -> State:
    """Convert a whole cruise: split its files into chunks, run each chunk as a child run of
    the batch deployment (one Kubernetes Job each), gather one summary.

    Files whose outputs are complete are not sent again, so a re-run redoes only what is
    missing; a failed child never loses the results of the others.
    """
    # The batch flow's parameters, as the caller gave them (credentials stay in the environment).
    batch_params = given(BatchRequest, locals())
    warn_on_credentials(input_storage_options, output_storage_options)
    req = BatchRequest(**batch_params)
    if files_per_job < 1:
        from echoflow.errors import ParameterError

        raise ParameterError(f"files_per_job must be at least 1, got {files_per_job}")
    storage.check_writable(req.output_prefix, req.output_storage_options)
    todo, rejected = plan(req)
    skipped, pending = [], []
    complete = (
        {}
        if req.overwrite
        else storage.complete_outputs(
            req.output_prefix, [convert.resolve_output(r) for r in todo], req.output_storage_options
        )
    )
    for r in todo:
        done = complete.get(convert.resolve_output(r))
        if done is None:
            pending.append(r)
        else:
            skipped.append(
                FileResult(
                    source=storage.public_url(r.raw_file),
                    status="skipped",
                    output=storage.public_url(convert.resolve_output(r)),
                    bytes=done.get("bytes"),
                )
            )
    chunks = chunked(pending, files_per_job)
    log = run_logger()
    log.info(
        "%d files: %d complete already, %d to convert in %d child run(s) of %s",
        len(todo) + len(rejected),
        len(skipped),
        len(pending),
        len(chunks),
        batch_deployment or "this process",
    )

    def child_params(chunk: list[ConvertRequest]) -> dict[str, Any]:
        return {**batch_params, "sources": [r.raw_file for r in chunk]}

    parts: list[Summary] = [Summary(files=rejected + skipped)]
    if batch_deployment is None:
        for chunk in chunks:
            state = convert_batch(**child_params(chunk), return_state=True)
            parts.append(child_summary(state.state_details.flow_run_id, chunk))
    else:
        runs = [
            cast(  # called from a sync flow, run_deployment returns the run, not a coroutine
                FlowRun,
                run_deployment(
                    name=batch_deployment,
                    parameters=child_params(chunk),
                    timeout=0,
                    job_variables=job_variables or None,
                    tags=["echoflow-cruise"],
                ),
            )
            for chunk in chunks
        ]
        log.info("started child runs: %s", ", ".join(r.name for r in runs))
        wait_all([r.id for r in runs], poll_seconds)
        parts += [child_summary(r.id, chunk) for r, chunk in zip(runs, chunks)]
    return finish(Summary.merge(parts), "convert-cruise")
