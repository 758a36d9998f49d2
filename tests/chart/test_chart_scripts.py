"""The chart's Prefect client scripts (hook init container, helm test) against a real
Prefect server, and the packaging / kind helper scripts."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

import jobtemplate as jt

FILES = jt.CHART / "files"
SCRIPTS = jt.REPO / "scripts"
FLOWS = ("convert-raw-sonar", "convert-batch", "convert-cruise")


def run_script(name: str, *args: str, api_url: str | None, tmp_path: Path, timeout: float = 120):
    """Run a script as the pods do: its own Python process, settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run([sys.executable, str(FILES / name), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def load_script(name: str):
    """Import a script from charts/echoflow/files (in-process: no interpreter start-up)."""
    module_name = f"echoflow_chart_{name[:-3]}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, FILES / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def call_script(name: str, *args: str, capsys) -> tuple[int, str, str]:
    """main(argv) of a script in this process, against the session's Prefect API."""
    code = load_script(name).main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


async def _install(pool: str, template: dict, deployment_name: str = "echoflow"):
    """What `echoflow deploy` leaves behind: the pool and the three deployments."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes",
                                                     base_job_template=template))
        for flow in FLOWS:
            flow_id = await client.create_flow_from_name(flow)
            await client.create_deployment(flow_id=flow_id, name=deployment_name,
                                           work_pool_name=pool,
                                           entrypoint=f"echoflow.flows:{flow.replace('-', '_')}")


@pytest.fixture(scope="module")
def installed(prefect_server, render, tmp_path_factory):
    """A pool named like the chart's with its template, and the three deployments."""
    template = jt.base_job_template(render("defaults"))
    pool = f"echoflow-{uuid.uuid4().hex[:6]}"
    deployment = f"echoflow-{uuid.uuid4().hex[:6]}"
    asyncio.run(_install(pool, template, deployment))
    path = tmp_path_factory.mktemp("bjt") / "base-job-template.json"
    path.write_text(json.dumps(template))
    return prefect_server, pool, deployment, path


def check_args(pool, deployment, template_path, *extra):
    args = ["--pool", pool]
    for flow in FLOWS:
        args += ["--deployment", f"{flow}/{deployment}"]
    return [*args, "--base-job-template", str(template_path), *extra]


def test_wait_for_api(prefect_server, tmp_path):
    ok = run_script("wait_for_api.py", "--timeout", "30", api_url=prefect_server, tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"Prefect API at {prefect_server} is healthy" in ok.stdout


def test_wait_for_api_gives_up(monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: 0}):
        code, out, err = call_script("wait_for_api.py", "--timeout", "1", "--interval", "0.2",
                                     capsys=capsys)
    assert code == 1
    assert f"Prefect API at {url} not healthy after 1s" in err

    monkeypatch.delenv("PREFECT_API_URL")
    code, _, err = call_script("wait_for_api.py", capsys=capsys)
    assert code == 2 and "PREFECT_API_URL is not set" in err


def test_check_install_passes(installed, tmp_path):
    url, pool, deployment, template_path = installed
    proc = run_script("check_install.py", *check_args(pool, deployment, template_path, "--timeout", "30"),
                      api_url=url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok: work pool '{pool}' (kubernetes)" in proc.stdout
    for flow in FLOWS:
        assert f"ok: deployment '{flow}/{deployment}' on pool '{pool}'" in proc.stdout
    assert "echoflow installation OK" in proc.stdout


def test_check_install_finds_problems(installed, tmp_path, capsys):
    url, pool, deployment, template_path = installed
    code, _, err = call_script("check_install.py", *check_args(pool, "nope", template_path),
                               capsys=capsys)
    assert code == 1
    assert "FAIL: deployment 'convert-raw-sonar/nope' does not exist" in err

    other = json.loads(template_path.read_text())
    other["variables"]["properties"]["memory_limit"]["default"] = "1Gi"
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    code, _, err = call_script("check_install.py", *check_args(pool, deployment, other_path),
                               capsys=capsys)
    assert code == 1
    assert "base job template differs" in err and "['variables']" in err

    code, _, err = call_script("check_install.py", "--pool", "no-such-pool", capsys=capsys)
    assert code == 1 and "FAIL: work pool 'no-such-pool' does not exist" in err


def test_check_install_requires_an_online_worker(installed, capsys):
    from prefect.client.orchestration import get_client

    url, pool, deployment, template_path = installed
    args = check_args(pool, deployment, template_path, "--require-worker", "--timeout", "2")
    code, out, err = call_script("check_install.py", *args, capsys=capsys)
    assert code == 1
    assert f"waiting for a worker on '{pool}'" in out
    assert f"FAIL: no worker online for work pool '{pool}'" in err

    async def heartbeat():
        async with get_client() as client:
            await client.send_worker_heartbeat(work_pool_name=pool, worker_name="worker-pod-1")

    asyncio.run(heartbeat())
    code, out, err = call_script("check_install.py", *args, capsys=capsys)
    assert code == 0, out + err
    assert "ok: worker(s) online: worker-pod-1" in out


# ---------------------------------------------------------------------------- shell scripts


@pytest.mark.parametrize("script", ["fetch-tools.sh", "chart-package.sh", "kind.sh"])
def test_shell_scripts_parse(script):
    path = SCRIPTS / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_chart_package_to_directory(helm_bin, tmp_path):
    dist = tmp_path / "dist"
    env = {**os.environ, "HELM": helm_bin, "DIST": str(dist), "CHART_REPO": ""}
    proc = subprocess.run([str(SCRIPTS / "chart-package.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dist / "echoflow-0.1.0.tgz").is_file()
    index = yaml.safe_load((dist / "index.yaml").read_text())
    (entry,) = index["entries"]["echoflow"]
    assert entry["version"] == "0.1.0" and entry["appVersion"] == "0.1.0"
    assert entry["urls"] == ["echoflow-0.1.0.tgz"]
    # The package is installable: it renders like the source chart.
    shown = jt.helm("show", "chart", str(dist / "echoflow-0.1.0.tgz")).stdout
    assert "version: 0.1.0" in shown


def test_chart_package_pushes_to_oci(helm_bin, tmp_path):
    log = tmp_path / "helm.log"
    stub = tmp_path / "helm"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n'
                    f'if [[ "$1" == push ]]; then exit 0; fi\nexec {helm_bin} "$@"\n')
    stub.chmod(0o755)
    dist = tmp_path / "dist"
    env = {**os.environ, "HELM": str(stub), "DIST": str(dist), "CHART_REPO": "oci://registry.example/charts"}
    proc = subprocess.run([str(SCRIPTS / "chart-package.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"push {dist}/echoflow-0.1.0.tgz oci://registry.example/charts" in log.read_text()
    assert not (dist / "index.yaml").exists()


def test_kind_script_commands(tmp_path):
    log = tmp_path / "kind.log"
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / "kind").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (stub_dir / "kind").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub_dir}:{os.environ['PATH']}", "KIND_CLUSTER": "ef-test",
           "IMAGE": "echoflow:0.1.0-abc"}
    for action in ("up", "load", "down"):
        proc = subprocess.run([str(SCRIPTS / "kind.sh"), action], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        "get clusters",
        "create cluster --name ef-test --config k8s/kind-config.yaml --wait 120s",
        "load docker-image echoflow:0.1.0-abc --name ef-test",
        "delete cluster --name ef-test",
    ]
    usage = subprocess.run([str(SCRIPTS / "kind.sh"), "sideways"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_kind_config_and_minio_manifests():
    config = yaml.safe_load((jt.K8S / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    # The kind values pin flow runs to the labelled worker node.
    kind_values = yaml.safe_load((jt.K8S / "values-kind.yaml").read_text())
    assert kind_values["flowRuns"]["nodeSelector"].items() <= config["nodes"][1]["labels"].items()

    docs = [d for d in yaml.safe_load_all((jt.K8S / "minio.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Secret", "Service", "Deployment", "Job"}
    for doc in docs:
        assert jt.validation_errors(doc) == [], doc["metadata"]["name"]
    images = [c["image"] for d in docs if d["kind"] in {"Deployment", "Job"}
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and all(i.startswith("quay.io/minio/minio:RELEASE.") for i in images)
    (s3,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "echoflow-s3"]
    assert set(s3["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                     "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"}
    assert kind_values["flowRuns"]["s3"]["existingSecret"] == "echoflow-s3"


def test_helm_lookup_order_and_failure(tmp_path, monkeypatch, helm_bin):
    """$HELM first, then PATH, then <repo>/.tools/helm; none of them: an error, not a skip."""
    fake_repo = tmp_path / "repo"
    (fake_repo / ".tools").mkdir(parents=True)
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setattr(jt, "REPO", fake_repo)
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("HELM", str(tmp_path / "no-such-helm"))
    with pytest.raises(jt.HelmNotFound, match="helm not found"):
        jt.helm_binary()

    tools_helm = fake_repo / ".tools" / "helm"
    tools_helm.write_text("#!/bin/sh\n")
    tools_helm.chmod(0o755)
    assert jt.helm_binary() == str(tools_helm)
    on_path = empty_bin / "helm"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert jt.helm_binary() == str(on_path)
    monkeypatch.setenv("HELM", helm_bin)
    assert jt.helm_binary() == helm_bin
