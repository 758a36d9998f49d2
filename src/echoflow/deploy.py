"""Register echoflow's flows as Prefect deployments on a work pool.

Metadata only: the code lives in the image, so deployments use module-path entrypoints
and no pull steps. Idempotent: what already matches is left untouched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from echoflow import __version__
from echoflow.errors import ParameterError

# flow name -> module-path entrypoint (no colon: imported from the installed package)
FLOWS = {
    "convert-raw-sonar": "echoflow.flows.convert.convert_raw_sonar",
    "convert-batch": "echoflow.flows.batch.convert_batch",
    "convert-cruise": "echoflow.flows.cruise.convert_cruise",
    "run-recipe": "echoflow.recipes.flow.run_recipe",
    "watch-prefix": "echoflow.flows.watch.watch_prefix",
}
TAGS = ["echoflow"]
# Flows that fan out wait for their children: they run on the pool's default queue with no
# limit, and every Job that does the conversions goes through this queue, which carries the
# concurrency limit. (With the limit on the pool, waiting parents could hold every slot.)
WORK_QUEUE = "conversions"
FAN_OUT = {"convert-cruise", "watch-prefix", "run-recipe"}
# Needs a source to watch: registered when ECHOFLOW_WATCH (JSON, from the chart's `watch`
# values) gives its parameters and schedule, or `{"enabled": false}` to unschedule it.
WATCH = "watch-prefix"


@dataclass
class Change:
    kind: str  # "pool" or "deployment"
    name: str
    action: str  # created, updated, unchanged


def load_template(path: Optional[Path]) -> Optional[dict[str, Any]]:
    if path is None:
        return None
    try:
        template = json.loads(path.read_text())
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read the base job template ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= template.keys():
        raise ParameterError(f"{path}: a base job template needs 'job_configuration' and 'variables'")
    return template


def _import_flow(entrypoint: str) -> Any:
    from prefect.utilities.importtools import import_object

    module, _, name = entrypoint.rpartition(".")
    return import_object(f"{module}:{name}")


def ensure_pool(client: Any, pool: str, create: bool, template: Optional[dict[str, Any]]) -> Change:
    try:
        existing = client.read_work_pool(pool)
    except ObjectNotFound:
        if not create:
            raise ParameterError(f"work pool {pool!r} does not exist; pass --create-pool to create it") from None
        if template is None:
            from prefect_kubernetes.worker import KubernetesWorker

            template = KubernetesWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template=template))
        return Change("pool", pool, "created")
    if template is not None and existing.base_job_template != template:
        client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))
        return Change("pool", pool, "updated")
    return Change("pool", pool, "unchanged")


def ensure_queue(client: Any, pool: str, concurrency_limit: Optional[int]) -> Change:
    name = f"{pool}/{WORK_QUEUE}"
    try:
        queue = client.read_work_queue_by_name(WORK_QUEUE, work_pool_name=pool)
    except ObjectNotFound:
        client.create_work_queue(
            WORK_QUEUE,
            work_pool_name=pool,
            concurrency_limit=concurrency_limit,
            description="echoflow conversion Jobs; its limit caps how many run at once",
        )
        return Change("queue", name, "created")
    # Declarative: None clears a limit set before (the chart's `concurrencyLimit: null` after 50).
    if queue.concurrency_limit != concurrency_limit:
        client.update_work_queue(queue.id, concurrency_limit=concurrency_limit)
        return Change("queue", name, "updated")
    return Change("queue", name, "unchanged")


def desired(flow_name: str, entrypoint: str, pool: str, image: str) -> dict[str, Any]:
    flow = _import_flow(entrypoint)
    return dict(
        entrypoint=entrypoint,
        work_pool_name=pool,
        work_queue_name="default" if flow_name in FAN_OUT else WORK_QUEUE,
        job_variables={"image": image},
        parameter_openapi_schema=parameter_schema(flow).model_dump(),
        description=(flow.description or "").strip() or None,
        tags=TAGS,
        enforce_parameter_schema=True,
        version=__version__,
    )


def ensure_deployment(client: Any, flow_name: str, name: str, spec: dict[str, Any]) -> Change:
    full = f"{flow_name}/{name}"
    try:
        current = client.read_deployment_by_name(full)
    except ObjectNotFound:
        current = None
    if current is not None and all(_same(current, k, v) for k, v in spec.items()):
        return Change("deployment", full, "unchanged")
    flow_id = client.create_flow_from_name(flow_name)
    client.create_deployment(flow_id=flow_id, name=name, pull_steps=[], **spec)
    if current is not None and spec.get("schedules") == []:
        drop_scheduled_runs(client, current.id)
    return Change("deployment", full, "updated" if current else "created")


def drop_scheduled_runs(client: Any, deployment_id: Any) -> None:
    """A removed schedule takes its future runs with it, including one the server's scheduler
    was inserting while the schedule changed (the server only drops those it knew of)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        )
    )
    for run in runs:
        client.delete_flow_run(run.id)


def deploy(
    pool: str,
    image: str,
    *,
    create_pool: bool = False,
    base_job_template: Optional[Path] = None,
    deployment_name: str = "echoflow",
    concurrency_limit: Optional[int] = None,
    flows: Optional[list[str]] = None,
) -> list[Change]:
    if not pool:
        raise ParameterError("a work pool name is required (--pool)")
    if not image:
        raise ParameterError("an image is required (--image): the flow-run Jobs run it")
    template = load_template(base_job_template)
    settings = watch_settings()
    names = flows or [n for n in FLOWS if n != WATCH or settings is not None]
    unknown = sorted(set(names) - set(FLOWS))
    if unknown:
        raise ParameterError(f"unknown flow(s) {', '.join(unknown)}: choose from {', '.join(FLOWS)}")
    specs = {}
    for n in names:
        try:
            specs[n] = desired(n, FLOWS[n], pool, image)
        except ImportError:
            if flows:  # asked for by name: say so
                raise
    if WATCH in specs:
        specs[WATCH].update(watch_spec(settings, specs[WATCH]["job_variables"]))
    with get_client(sync_client=True) as client:
        changes = [ensure_pool(client, pool, create_pool, template), ensure_queue(client, pool, concurrency_limit)]
        changes += [ensure_deployment(client, n, deployment_name, s) for n, s in specs.items()]
    return changes


def watch_settings() -> Optional[dict[str, Any]]:
    text = os.environ.get("ECHOFLOW_WATCH", "").strip()
    if not text:
        return None
    from echoflow.flows.watch import schedule_settings

    return schedule_settings(text)


def watch_spec(settings: Optional[dict[str, Any]], job_variables: dict[str, Any]) -> dict[str, Any]:
    """One run at a time (a run due while one is running is cancelled), on the given schedule,
    with its own job variables (a small pod: it lists and waits, its children convert)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    spec: dict[str, Any] = dict(
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        schedules=[],
    )
    if not settings or settings.get("enabled") is False:
        return spec
    tz = settings.get("timezone") or "UTC"
    schedule = (
        IntervalSchedule(interval=timedelta(seconds=settings["interval"]), anchor_date=ANCHOR, timezone=tz)
        if settings.get("interval")
        else CronSchedule(cron=settings["cron"], timezone=tz)
    )
    return {
        **spec,
        "parameters": settings["parameters"],
        "job_variables": {**job_variables, **settings.get("job_variables", {})},
        "schedules": [DeploymentScheduleCreate(schedule=schedule, active=True)],
    }


ANCHOR = datetime(2020, 1, 1, tzinfo=timezone.utc)  # fixed, so an unchanged interval compares equal


def _same(current: Any, key: str, value: Any) -> bool:
    have = getattr(current, key)
    if key == "schedules":
        return [(s.schedule, s.active) for s in have] == [(s.schedule, s.active) for s in value]
    if key == "concurrency_limit" and getattr(current, "global_concurrency_limit", None) is not None:
        have = current.global_concurrency_limit.limit
    if key == "concurrency_options":
        return getattr(have, "collision_strategy", None) == getattr(value, "collision_strategy", None)
    return have == value
