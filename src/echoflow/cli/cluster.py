"""`echoflow cluster …`: checks the Helm chart's pods run in the image (no scripts in ConfigMaps).

    echoflow cluster wait-for-api --timeout 600      init containers: until the API answers
    echoflow cluster check --pool P --deployment-name D --base-job-template F --require-worker
                                                     `helm test`: the installation is complete

Both read PREFECT_API_URL (and PREFECT_API_KEY / PREFECT_API_AUTH_STRING) from the
environment and refuse to run without it: a Prefect client without a URL would start a
throwaway local server and "pass". The deployments checked are every flow of
echoflow.deploy.FLOWS that deploy registers, read at run time, so a flow added there is
checked too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from echoflow.cli.common import fail

cluster_app = typer.Typer(
    help="Checks run by the Helm chart's pods (wait for the API, helm test).", no_args_is_help=True
)


class CheckFailed(Exception):
    pass


def _say(message: str) -> None:
    print(message, flush=True)


def _api_url() -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        fail("PREFECT_API_URL is not set", code=2)
    return url


async def _probe() -> Optional[Exception]:
    """None when the API is healthy and accepts our credentials; else what went wrong."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    async with get_client() as client:
        error = await client.api_healthcheck()  # /health answers without credentials
        if error is not None:
            return error
        try:
            await client.hello()  # behind the API's auth
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code in (401, 403):
                raise CheckFailed(
                    f"the Prefect API refused our credentials (HTTP {exc.response.status_code}): "
                    "check the Secret behind PREFECT_API_AUTH_STRING / PREFECT_API_KEY"
                ) from None
            return exc
        return None


def wait_for_api(timeout: float, interval: float = 5.0) -> bool:
    """Poll until the API answers with our credentials; False after `timeout` seconds."""
    url = os.environ.get("PREFECT_API_URL", "")
    deadline = time.monotonic() + timeout
    while True:
        try:
            error = asyncio.run(_probe())
        except CheckFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - DNS, TLS, refused: report and retry
            error = exc
        if error is None:
            _say(f"Prefect API at {url} is healthy")
            return True
        if time.monotonic() >= deadline:
            typer.echo(f"Prefect API at {url} not healthy after {timeout:.0f}s: {error!r}", err=True)
            return False
        _say(f"waiting for the Prefect API at {url}: {error!r}")
        time.sleep(interval)


def _differing_keys(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))


async def _check(
    pool_name: str, deployments: list[str], template: Optional[Path], require_worker: bool, deadline: float
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(pool_name)
        except ObjectNotFound:
            raise CheckFailed(f"work pool {pool_name!r} does not exist") from None
        if pool.type != "kubernetes":
            raise CheckFailed(f"work pool {pool_name!r} has type {pool.type!r}, not 'kubernetes'")
        _say(f"ok: work pool {pool_name!r} (kubernetes)")

        if template is not None:
            expected = json.loads(template.read_text())
            if pool.base_job_template != expected:
                raise CheckFailed(
                    f"work pool {pool_name!r} base job template differs from {template} in "
                    f"{_differing_keys(expected, pool.base_job_template)}"
                )
            _say(f"ok: base job template matches {template}")

        for name in deployments:
            try:
                deployment = await client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise CheckFailed(f"deployment {name!r} does not exist") from None
            if deployment.work_pool_name != pool_name:
                raise CheckFailed(
                    f"deployment {name!r} uses work pool {deployment.work_pool_name!r}, not {pool_name!r}"
                )
            _say(f"ok: deployment {name!r} on pool {pool_name!r}")

        while require_worker:
            workers = await client.read_workers_for_work_pool(pool_name)
            online = [w.name for w in workers if str(getattr(w.status, "value", w.status)) == "ONLINE"]
            if online:
                _say(f"ok: worker(s) online: {', '.join(online)}")
                break
            _say(f"waiting for a worker on {pool_name!r}")
            if time.monotonic() >= deadline:
                raise CheckFailed(f"no worker online for work pool {pool_name!r}")
            await asyncio.sleep(5)


def expected_deployments(deployment_name: Optional[str]) -> list[str]:
    """<flow>/<name> for every flow `echoflow deploy` registers with this environment (the
    watch flow only with ECHOFLOW_WATCH, as deploy decides); none without a name."""
    if not deployment_name:
        return []
    from echoflow import deploy

    watched = getattr(deploy, "WATCH", None)
    registers_watch = watched is not None and deploy.watch_settings() is not None
    return [f"{flow}/{deployment_name}" for flow in deploy.FLOWS if flow != watched or registers_watch]


@cluster_app.command("wait-for-api")
def wait_for_api_command(
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="Seconds before giving up"),
    interval: float = typer.Option(5.0, "--interval", min=0.05, help="Seconds between tries"),
) -> None:
    """Wait until the Prefect API answers (health check, then a call with our credentials)."""
    _api_url()
    try:
        ok = wait_for_api(timeout, interval)
    except CheckFailed as exc:
        typer.echo(f"FAIL: {exc}", err=True)
        raise typer.Exit(1) from None
    if not ok:
        raise typer.Exit(1)


@cluster_app.command("check")
def check_command(
    pool: str = typer.Option(..., "--pool", help="Work pool that must exist (type kubernetes)"),
    deployment_name: Optional[str] = typer.Option(
        None, "--deployment-name", help="Check <flow>/<name> for every flow echoflow registers"
    ),
    base_job_template: Optional[Path] = typer.Option(
        None, "--base-job-template", exists=True, dir_okay=False, help="JSON the pool's template must equal"
    ),
    require_worker: bool = typer.Option(False, "--require-worker", help="A worker must poll the pool"),
    timeout: float = typer.Option(300.0, "--timeout", min=0, help="Seconds to wait for the API and a worker"),
) -> None:
    """Check an installation: API, pool and template, deployments, an online worker."""
    _api_url()
    deadline = time.monotonic() + timeout
    try:
        if not wait_for_api(timeout):
            raise typer.Exit(1)
        asyncio.run(_check(pool, expected_deployments(deployment_name), base_job_template, require_worker, deadline))
    except CheckFailed as exc:
        typer.echo(f"FAIL: {exc}", err=True)
        raise typer.Exit(1) from None
    _say("echoflow installation OK")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
