"""Reading back what a run recorded in the real Prefect API."""

from __future__ import annotations

from uuid import UUID


def flow_run_logs(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def task_runs(flow_run_id: UUID, expect: int | None = None, timeout: float = 20) -> list:
    """Task runs of a flow run; with `expect`, wait for that many (workers report them as events)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        runs = _task_runs(flow_run_id)
        final = [t for t in runs if t.state and t.state.is_final()]
        if expect is None or len(final) >= expect or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def _task_runs(flow_run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def artifacts(flow_run_id: UUID) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
