"""`helm install` of the chart against the Kubernetes API stand-in, on loopback.

What the chart and k8s/minio.yaml put in a cluster, as far as the flow runs need it:
the rendered Secrets and the S3 Secret in the API stand-in, the work pool and
deployments registered by the chart's own hook command (`echoflow deploy ...`), the
worker Deployment's container running the real `prefect worker start --type kubernetes`
against the stand-in, and the kubelet side running the Jobs it creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import replay
import yaml
from e2e_docker import REPO
from kube_api import ApiServer
from kubelet import Kubelet
from rbac import role_rules
from worker_pod import WorkerPod, chart_data, secret_objects

sys.path.insert(0, str(REPO / "tests" / "chart"))
import jobtemplate as jt  # noqa: E402

VALUES = "k8s/values-kind.yaml"
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    api: ApiServer
    kubelet: Kubelet
    worker: WorkerPod
    objects: list[dict]
    namespace: str
    rules: list[dict]
    pool: str
    image: str
    template: dict


def kind_secret(name: str) -> dict[str, str]:
    """The S3 Secret k8s/minio.yaml creates for the kind e2e (its keys)."""
    for doc in yaml.safe_load_all((REPO / "k8s" / "minio.yaml").read_text()):
        if doc and doc["kind"] == "Secret" and doc["metadata"]["name"] == name:
            return doc["stringData"]
    raise LookupError(f"no Secret {name} in k8s/minio.yaml")


def s3_secret_names(template: dict) -> list[str]:
    """Secrets the flow-run container takes its environment from (envFrom), fixed or defaulted."""
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    env_from = container.get("envFrom")
    if isinstance(env_from, str):  # a "{{ env_from }}" variable
        env_from = template["variables"]["properties"][env_from.strip("{} ")]["default"]
    return [source["secretRef"]["name"] for source in env_from or [] if "secretRef" in source]


def register(objects: list[dict], template: dict, image: str, work: Path) -> str:
    """Run the chart's deployments hook command (the pool and deployments); the pool name."""
    hooks = [o for o in jt.find(objects, "Job") if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert len(hooks) == 1, [o["metadata"]["name"] for o in jt.find(objects, "Job")]
    command = hooks[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["echoflow", "deploy"], command
    template_file = work / "base-job-template.json"
    template_file.write_text(json.dumps(template))
    command[command.index("--base-job-template") + 1] = str(template_file)  # the ConfigMap the hook mounts
    assert command[command.index("--image") + 1] == image
    # The hook container's literal env (e.g. ECHOFLOW_WATCH) as the hook has it.
    literal = {
        e["name"]: e["value"]
        for e in hooks[0]["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if "value" in e and not e["name"].startswith("PREFECT_")
    }
    env = {**os.environ, **literal, "ECHOFLOW_HOME": str(work / "home"), "COLUMNS": "200"}
    proc = subprocess.run([str(BIN / "echoflow"), *command[1:]], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return command[command.index("--pool") + 1]


def unregister(pool: str) -> None:
    """Leave the session's Prefect server as found: other tests register these names too."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from echoflow.deploy import FLOWS

    with get_client(sync_client=True) as client:
        for flow in FLOWS:
            try:
                deployment = client.read_deployment_by_name(f"{flow}/echoflow")
            except ObjectNotFound:
                continue
            if deployment.work_pool_name == pool:
                client.delete_deployment(deployment.id)
        client.delete_work_pool(pool)


@contextlib.contextmanager
def installed(image: str, prefect_url: str, s3_env: dict[str, str], work: Path, set_values: dict) -> Iterator[Cluster]:
    repository, _, tag = image.rpartition(":")
    objects = jt.render_chart([VALUES], {"image.repository": repository, "image.tag": tag, **set_values})
    namespace, rules = role_rules(objects)
    template = jt.base_job_template(objects)
    pool = register(objects, template, image, work)
    secrets = chart_data(objects, "Secret")
    for s3_secret in s3_secret_names(template):
        secrets[s3_secret] = {k: s3_env[k] for k in kind_secret(s3_secret)}
    roles = {"worker": rules, "control": rules, "kubelet": None, "kubectl": None}
    try:
        with ApiServer(namespace, roles, work) as api:
            for secret in secret_objects(secrets):
                api.put("v1/secrets", namespace, secret)
            with Kubelet(api, namespace, replay.kind_worker_node()) as kubelet:
                (work / "worker").mkdir()
                worker = WorkerPod.from_chart(
                    objects, image, api_url=prefect_url, kubeconfig=api.kubeconfig("worker"), workdir=work / "worker"
                )
                worker.start()
                try:
                    worker.wait_healthy()
                    yield Cluster(api, kubelet, worker, objects, namespace, rules, pool, image, template)
                finally:
                    worker.stop()
    finally:
        unregister(pool)
