"""The server and worker containers' commands and environment, as rendered, run here
as real processes (paths moved into a temporary directory, ports made free)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import jobtemplate as jt
import pytest
from chartcases import RELEASE
from procs import free_port

BIN = Path(sys.executable).parent


def container_of(objects, name):
    (dep,) = jt.find(objects, "Deployment", name)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def plain_env(container, home: Path) -> dict:
    """The container's literal env values, with the chart's HOME moved to `home`."""
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"].replace("/home/jovyan", str(home))
    return env


def start(cmd, env, log: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base["PATH"] = f"{BIN}:{base.get('PATH', '')}"
    return subprocess.Popen(
        cmd, env={**base, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer 200 in {timeout}s:\n{log.read_text()[-3000:]}")


def _recognized(name: str, value: str) -> bool:
    """Does Prefect (or prefect-kubernetes) read this environment variable?"""
    from prefect.settings import Settings
    from prefect_kubernetes.settings import KubernetesSettings

    cls = KubernetesSettings if name.startswith("PREFECT_INTEGRATIONS_KUBERNETES_") else Settings
    before = cls().model_dump(mode="python")
    old = os.environ.get(name)
    try:
        # The chart's value may equal the default: try others of other types too.
        for probe in (value, "12345", "true", "false", "http://probe:1/api", "probe"):
            os.environ[name] = probe
            try:
                if cls().model_dump(mode="python") != before:
                    return True
            except Exception:  # not a valid value for this setting
                continue
        return False
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@pytest.mark.parametrize("value_set", ["defaults", "prefect-cloud", "postgres"])
def test_prefect_env_names_are_real_settings(render, value_set):
    """Every PREFECT_* variable the chart sets is one Prefect reads (a typo would be
    silently ignored), in every container and in the flow-run template's env."""
    objects = render(value_set)
    envs = []
    for o in objects:
        if o["kind"] in {"Deployment", "Job", "Pod"}:
            pod = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                envs += [(e["name"], e.get("value") or "x-from-secret") for e in c.get("env", [])]
    defaults = jt.base_job_template(objects)["variables"]["properties"]["env"]["default"]
    envs += list(defaults.items())
    names = {n for n, _ in envs if n.startswith("PREFECT_")}
    assert {"PREFECT_API_URL", "PREFECT_HOME"} <= names
    for name, value in sorted(set(envs)):
        if name.startswith("PREFECT_"):
            assert _recognized(name, value), f"{name} is not a Prefect setting"


def test_server_command_matches_prefect_cli(render):
    """The flags of `prefect server start` and `prefect worker start` used by the chart exist."""
    import inspect

    from prefect.cli import server as server_cli
    from prefect.cli import worker as worker_cli

    objects = render("defaults")
    server = container_of(objects, f"{RELEASE}-server")["command"]
    assert server[:3] == ["prefect", "server", "start"]
    server_source = inspect.getsource(server_cli)
    for flag in (a for a in server if a.startswith("--")):
        assert f'"{flag}"' in server_source, flag
    worker = container_of(objects, f"{RELEASE}-worker")["command"]
    worker_source = inspect.getsource(worker_cli)
    for flag in (a for a in worker if a.startswith("--")):
        assert f'"{flag}"' in worker_source, flag
    assert worker[worker.index("--install-policy") + 1] in {p.value for p in worker_cli.InstallPolicy}


def test_worker_container_runs(prefect_server, helm_bin, tmp_path):
    """`prefect worker start` with the chart's flags and env against a real server: it
    creates the pool from the mounted base job template, registers under its pod name
    and answers its probes on the container port they name (the chart's env decides where
    the worker listens: nothing here overrides it). (The kopf observer is switched off: no
    cluster here.)"""
    from prefect.client.orchestration import get_client

    pool = f"chart-worker-{uuid.uuid4().hex[:6]}"
    objects = jt.render_chart(
        set_values={"workPool.name": pool, "worker.limit": 2, "worker.healthcheckPort": free_port()}
    )
    c = container_of(objects, f"{RELEASE}-worker")
    home = tmp_path / "home"
    home.mkdir()
    template_file = tmp_path / "base-job-template.json"
    template = jt.base_job_template(objects)
    template_file.write_text(json.dumps(template))

    env = plain_env(c, home)
    env.update({"PREFECT_API_URL": prefect_server, "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED": "false"})
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cmd = [
        arg.replace("$(POD_NAME)", "worker-pod-0").replace("/etc/echoflow/base-job-template.json", str(template_file))
        for arg in c["command"]
    ]
    log = tmp_path / "worker.log"
    proc = start(cmd, env, log)
    try:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c[kind]["httpGet"]
            url = f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}"
            assert wait_for(url, proc, log).json() == {"message": "OK"}, kind

        async def state():
            from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

            async with get_client() as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        workers = await client.read_workers_for_work_pool(pool)
                    except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                        if getattr(getattr(exc, "response", None), "status_code", 404) != 404:
                            raise
                        workers = []
                    if workers or time.monotonic() > deadline or proc.poll() is not None:
                        break
                    await asyncio.sleep(0.5)
                return await client.read_work_pool(pool), workers

        work_pool, workers = asyncio.run(state())
        assert work_pool.type == "kubernetes"
        assert work_pool.base_job_template == template
        assert [w.name for w in workers] == ["worker-pod-0"]
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
