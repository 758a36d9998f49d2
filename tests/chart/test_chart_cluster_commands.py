"""`echoflow cluster wait-for-api` and `echoflow cluster check` (the chart's init
containers and `helm test` pod) against real Prefect servers, one of them with basic auth."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jobtemplate as jt
import pytest

from echoflow.cli.cluster import expected_deployments
from echoflow.deploy import FLOWS

BIN = Path(sys.executable).parent
CANARY_AUTH = "echoflow:canary-9f3b1c7e-auth"


def echoflow(
    *args: str, api_url: str | None, tmp_path: Path, auth: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`echoflow …` as the pods run it: its own process, settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["ECHOFLOW_HOME"] = str(tmp_path / "echoflow-home")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    return subprocess.run([str(BIN / "echoflow"), *args], env=env, capture_output=True, text=True, timeout=timeout)


async def _install(pool: str, template: dict, deployment_name: str, flows) -> None:
    """What `echoflow deploy` leaves behind: the pool and a deployment per flow."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template=template))
        for flow in flows:
            flow_id = await client.create_flow_from_name(flow)
            await client.create_deployment(
                flow_id=flow_id, name=deployment_name, work_pool_name=pool, entrypoint=FLOWS[flow]
            )


@pytest.fixture(scope="module")
def installed(prefect_server, render, tmp_path_factory):
    """A pool with the chart's template and a deployment for every flow of deploy.FLOWS."""
    template = jt.base_job_template(render("defaults"))
    pool = f"echoflow-{uuid.uuid4().hex[:6]}"
    deployment = f"echoflow-{uuid.uuid4().hex[:6]}"
    flows = [name.split("/")[0] for name in expected_deployments(deployment)]
    asyncio.run(_install(pool, template, deployment, flows))
    path = tmp_path_factory.mktemp("bjt") / "base-job-template.json"
    path.write_text(json.dumps(template))
    return prefect_server, pool, deployment, path


@pytest.fixture(scope="module")
def auth_server(render, tmp_path_factory):
    """The chart's server container (defaults: auth on) run here, its secretKeyRef'd auth
    string set to a canary value."""
    from test_chart_processes import container_of, free_port, plain_env, start, stop, wait_for

    home = tmp_path_factory.mktemp("auth-server")
    objects = render("defaults")
    c = container_of(objects, "echoflow-server")
    env = plain_env(c, home)
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "PREFECT_SERVER_API_AUTH_STRING"]
    assert ref == {"name": "echoflow-api-auth", "key": "auth-string"}
    port = free_port()
    env.update(
        {
            "PREFECT_SERVER_API_AUTH_STRING": CANARY_AUTH,
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        }
    )
    cmd = [a.replace("0.0.0.0", "127.0.0.1").replace("4200", str(port)) for a in c["command"]]
    log = home / "server.log"
    proc = start(cmd, env, log)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(f"{url}/health", proc, log)  # the probes' path answers without credentials
        yield url
    finally:
        stop(proc)


def test_wait_for_api(prefect_server, tmp_path):
    ok = echoflow("cluster", "wait-for-api", "--timeout", "30", api_url=prefect_server, tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"Prefect API at {prefect_server} is healthy" in ok.stdout


def test_wait_for_api_gives_up_and_needs_a_url(tmp_path):
    from test_chart_processes import free_port

    url = f"http://127.0.0.1:{free_port()}/api"  # nobody listens
    proc = echoflow("cluster", "wait-for-api", "--timeout", "1", "--interval", "0.2", api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"Prefect API at {url} not healthy after 1s" in proc.stderr
    proc = echoflow("cluster", "wait-for-api", api_url=None, tmp_path=tmp_path)
    assert proc.returncode == 2 and "PREFECT_API_URL is not set" in proc.stderr


def test_wait_for_api_with_basic_auth(auth_server, tmp_path):
    """Healthy is not enough: the credentials must be accepted, and a wrong string fails fast."""
    ok = echoflow(
        "cluster", "wait-for-api", "--timeout", "30", api_url=auth_server, auth=CANARY_AUTH, tmp_path=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for auth in (None, "echoflow:wrong"):
        bad = echoflow("cluster", "wait-for-api", "--timeout", "30", api_url=auth_server, auth=auth, tmp_path=tmp_path)
        assert bad.returncode == 1, bad.stdout
        assert "FAIL: the Prefect API refused our credentials (HTTP 401)" in bad.stderr
        assert CANARY_AUTH not in bad.stdout + bad.stderr


def test_check_passes_and_derives_deployments_from_flows(installed, tmp_path):
    url, pool, deployment, template_path = installed
    proc = echoflow(
        "cluster",
        "check",
        "--pool",
        pool,
        "--deployment-name",
        deployment,
        "--base-job-template",
        str(template_path),
        "--timeout",
        "30",
        api_url=url,
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok: work pool '{pool}' (kubernetes)" in proc.stdout
    for name in expected_deployments(deployment):  # what deploy registers, none hard-coded
        assert f"ok: deployment '{name}' on pool '{pool}'" in proc.stdout
    assert "echoflow installation OK" in proc.stdout


def test_expected_deployments_follow_deploy():
    """Every flow of FLOWS but the watch flow, which deploy registers only with ECHOFLOW_WATCH."""
    from echoflow import deploy

    names = expected_deployments("d")
    assert names == [f"{f}/d" for f in deploy.FLOWS if f != getattr(deploy, "WATCH", None)]
    assert {"convert-raw-sonar/d", "convert-batch/d", "convert-cruise/d", "run-recipe/d"} <= set(names)
    assert expected_deployments(None) == []


def test_expected_deployments_with_watch_settings(monkeypatch, helm_bin):
    """The test pod gets the hook's ECHOFLOW_WATCH, so it expects watch-prefix exactly when
    deploy registers it."""
    objects = jt.render_chart(set_values={"watch.source": "s3://ship-uploads/DY1801/"})
    env = {}
    for kind, name in (("Job", "echoflow-deploy"), ("Pod", "echoflow-test")):
        (o,) = jt.find(objects, kind, name)
        spec = o["spec"] if kind == "Pod" else o["spec"]["template"]["spec"]
        env[kind] = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["Pod"]["ECHOFLOW_WATCH"] == env["Job"]["ECHOFLOW_WATCH"]
    monkeypatch.setenv("ECHOFLOW_WATCH", env["Pod"]["ECHOFLOW_WATCH"])
    assert expected_deployments("d") == [f"{f}/d" for f in FLOWS]


def test_check_without_deployments(installed, tmp_path):
    """deployments.enabled=false: the test pod gets no --deployment-name and checks none."""
    url, pool, _, template_path = installed
    proc = echoflow(
        "cluster", "check", "--pool", pool, "--base-job-template", str(template_path), api_url=url, tmp_path=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deployment" not in proc.stdout


def test_check_finds_problems(installed, tmp_path):
    url, pool, deployment, template_path = installed
    proc = echoflow("cluster", "check", "--pool", pool, "--deployment-name", "nope", api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"FAIL: deployment '{next(iter(FLOWS))}/nope' does not exist" in proc.stderr

    other = json.loads(template_path.read_text())
    other["variables"]["properties"]["memory_limit"]["default"] = "1Gi"
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    proc = echoflow(
        "cluster", "check", "--pool", pool, "--base-job-template", str(other_path), api_url=url, tmp_path=tmp_path
    )
    assert proc.returncode == 1
    assert "base job template differs" in proc.stderr and "['variables']" in proc.stderr

    proc = echoflow("cluster", "check", "--pool", "no-such-pool", api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 1 and "FAIL: work pool 'no-such-pool' does not exist" in proc.stderr


def test_check_requires_an_online_worker(installed, tmp_path):
    from prefect.client.orchestration import get_client

    url, pool, deployment, template_path = installed
    args = ["cluster", "check", "--pool", pool, "--require-worker", "--timeout", "2"]
    proc = echoflow(*args, api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"waiting for a worker on '{pool}'" in proc.stdout
    assert f"FAIL: no worker online for work pool '{pool}'" in proc.stderr

    async def heartbeat():
        async with get_client() as client:
            await client.send_worker_heartbeat(work_pool_name=pool, worker_name="worker-pod-1")

    asyncio.run(heartbeat())
    proc = echoflow(*args, api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: worker(s) online: worker-pod-1" in proc.stdout
