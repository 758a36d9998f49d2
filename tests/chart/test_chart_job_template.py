"""The chart's base job template, run through prefect-kubernetes' own job configuration
code against a real Prefect server: the Job the worker would create for a flow run."""

from __future__ import annotations

import asyncio
import copy
import uuid

import jobtemplate as jt
import pytest
from chartcases import NAMESPACE, RELEASE

ENTRYPOINT = "echoflow.flows.batch:convert_batch"
PARAMS = {
    "sources": ["s3://archive/raw/DY1801/EK60/*.raw"],
    "sonar_model": "EK60",
    "output_prefix": "s3://converted/DY1801",
}


def _env(manifest: dict) -> dict:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _container(manifest: dict) -> dict:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


async def _register(template: dict, pool_name: str, job_variables: dict | None = None):
    """Pool with the chart's template, a flow, a deployment (not run) and one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool_name, type="kubernetes", base_job_template=template))
        flow_id = await client.create_flow_from_name("convert-batch")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=f"echoflow-{uuid.uuid4().hex[:6]}",
            work_pool_name=pool_name,
            entrypoint=ENTRYPOINT,
            job_variables=job_variables or {},
        )
        flow_run = await client.create_flow_run_from_deployment(deployment_id, parameters=PARAMS)
        deployment = await client.read_deployment(deployment_id)
        flow = await client.read_flow(flow_id)
        pool = await client.read_work_pool(pool_name)
        return pool, deployment, flow, flow_run


@pytest.fixture(scope="module")
def registered(prefect_server, render):
    """value set -> (template, pool, deployment, flow, flow_run, manifest)."""
    cache: dict = {}

    def _get(value_set: str, job_variables: dict | None = None):
        key = (value_set, repr(job_variables))
        if key not in cache:
            template = jt.base_job_template(render(value_set))
            pool_name = f"{value_set}-{uuid.uuid4().hex[:6]}"
            pool, deployment, flow, flow_run = asyncio.run(_register(template, pool_name, job_variables))
            manifest = jt.job_manifest_for_flow_run(template, flow_run, deployment, flow)
            cache[key] = (template, pool, deployment, flow, flow_run, manifest)
        return cache[key]

    return _get


def test_server_accepts_template_unchanged(registered):
    template, pool, *_ = registered("defaults")
    assert pool.type == "kubernetes"
    assert pool.base_job_template == template


def test_template_keeps_prefect_kubernetes_structure(render):
    """prefect-kubernetes' job_configuration fields are there (cluster_config and command
    aside: Jobs run in this cluster, and the worker fills in its own command); the
    variables are a closed subset of its defaults plus ephemeral storage."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    template = jt.base_job_template(render("defaults"))
    assert set(template) == {"job_configuration", "variables"}
    assert set(default["job_configuration"]) - {"cluster_config", "command"} <= set(template["job_configuration"])
    assert "cluster_config" not in template["job_configuration"]
    variables = template["variables"]
    assert variables["additionalProperties"] is False
    assert set(variables["properties"]) == {
        "name",
        "image",
        "env",
        "labels",
        "backoff_limit",
        "finished_job_ttl",
        "active_deadline_seconds",
        "cpu_request",
        "cpu_limit",
        "memory_request",
        "memory_limit",
        "ephemeral_storage_request",
        "ephemeral_storage_limit",
        "job_watch_timeout_seconds",
        "pod_watch_timeout_seconds",
        "stream_output",
    }
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["metadata"]["generateName"] == "{{ name }}-"
    assert "args" not in _container(manifest) and "command" not in _container(manifest)


def test_default_job_manifest(registered, prefect_server):
    template, pool, deployment, flow, flow_run, manifest = registered("defaults")
    pod = manifest["spec"]["template"]["spec"]
    container = _container(manifest)
    env = _env(manifest)

    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["metadata"]["generateName"].endswith("-")
    assert container["image"] == "echoflow:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "60Gi"},
    }
    assert pod["serviceAccountName"] == f"{RELEASE}-flow-run"
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"

    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["PREFECT_API_URL"] == prefect_server
    assert env["ECHOFLOW_SCRATCH"] == "/scratch"
    assert env["ECHOFLOW_HOME"] == "/home/jovyan/.echoflow"
    assert env["PREFECT_HOME"] == "/home/jovyan/.prefect"
    assert env["HOME"] == "/home/jovyan"
    # backoffLimit 0: an evicted pod makes the run reschedule itself.
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 86400
    assert manifest["spec"]["activeDeadlineSeconds"] == 43200
    assert "envFrom" not in container  # no S3 Secret in the defaults
    assert "PREFECT_API_AUTH_STRING" not in env  # this process has none to pass on

    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts == {"/tmp": "tmp", "/home/jovyan": "home", "/scratch": "scratch"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "50Gi"}
    assert all("emptyDir" in v for v in volumes.values())

    labels = manifest["metadata"]["labels"]
    assert labels["prefect.io/flow-run-id"] == str(flow_run.id)
    assert labels["prefect.io/deployment-name"] == deployment.name
    assert labels["app.kubernetes.io/instance"] == RELEASE
    assert labels["app.kubernetes.io/component"] == "flow-run"
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels


def test_manifest_is_a_valid_job(registered):
    """The request the worker sends is strictly valid as it is: no pod-spec extras."""
    *_, manifest = registered("defaults")
    assert jt.validation_errors(manifest) == []
    assert not set(jt.PRUNED_POD_SPEC_FIELDS) & set(manifest["spec"]["template"]["spec"])
    assert (manifest["spec"]["parallelism"], manifest["spec"]["completions"]) == (1, 1)


def test_irsa_values_reach_the_job(registered):
    *_, manifest = registered("eks-irsa")
    pod = manifest["spec"]["template"]["spec"]
    container = _container(manifest)
    env = _env(manifest)
    assert container["image"] == "123456789012.dkr.ecr.us-west-2.amazonaws.com/echoflow:0.1.0"
    assert pod["serviceAccountName"] == "echoflow-flow-run"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "40Gi"},
        "limits": {"cpu": "8", "memory": "30Gi", "ephemeral-storage": "110Gi"},
    }
    assert {v["name"]: v for v in pod["volumes"]}["scratch"]["emptyDir"] == {"sizeLimit": "100Gi"}
    assert pod["nodeSelector"] == {
        "eks.amazonaws.com/capacityType": "SPOT",
        "node.kubernetes.io/instance-type": "r6i.2xlarge",
    }
    assert {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    assert len(pod["tolerations"]) == 2
    assert env["AWS_DEFAULT_REGION"] == "us-west-2"
    assert "envFrom" not in container  # S3 through IRSA, no key Secret
    assert manifest["spec"]["activeDeadlineSeconds"] == 21600
    assert jt.validation_errors(manifest) == []


def test_kind_values_reach_the_job(registered):
    *_, manifest = registered("kind")
    container = _container(manifest)
    assert container["image"] == "echoflow:0.1.0-test"
    assert container["imagePullPolicy"] == "Never"
    assert container["envFrom"] == [{"secretRef": {"name": "echoflow-s3"}}]
    assert container["resources"]["limits"]["memory"] == "3Gi"
    assert _env(manifest)["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert jt.validation_errors(manifest) == []


def test_deployment_job_variables_override_defaults(registered):
    overrides = {
        "memory_limit": "32Gi",
        "cpu_request": "500m",
        "env": {"EXTRA": "1"},
        "backoff_limit": 2,
        "active_deadline_seconds": 600,
        "ephemeral_storage_limit": "80Gi",
    }
    *_, manifest = registered("defaults", overrides)
    container = _container(manifest)
    env = _env(manifest)
    assert container["resources"]["limits"]["memory"] == "32Gi"
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert env["EXTRA"] == "1"
    assert env["ECHOFLOW_SCRATCH"] == "/scratch"  # chart env kept beside the deployment's
    assert manifest["spec"]["backoffLimit"] == 2
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "relinquish"
    assert manifest["spec"]["activeDeadlineSeconds"] == 600
    assert container["resources"]["limits"]["ephemeral-storage"] == "80Gi"
    assert jt.validation_errors(manifest) == []


def test_server_rejects_malformed_quantity_in_job_variables(registered):
    """The variables schema carries the quantity pattern, so Prefect refuses a bad override."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    template, pool, deployment, flow, flow_run, _ = registered("defaults")

    async def run_with(job_variables):
        async with get_client() as client:
            return await client.create_flow_run_from_deployment(
                deployment.id, parameters=PARAMS, job_variables=job_variables
            )

    with pytest.raises(PrefectHTTPStatusError, match=r"memory_limit.*'lots' does not match"):
        asyncio.run(run_with({"memory_limit": "lots"}))
    ok = asyncio.run(run_with({"memory_limit": "12Gi"}))
    manifest = jt.job_manifest_for_flow_run(template, ok, deployment, flow)
    assert _container(manifest)["resources"]["limits"]["memory"] == "12Gi"


def test_helper_matches_the_worker_code_path(registered):
    """job_manifest_for_flow_run == what KubernetesWorker._submit_run_and_capture_errors
    builds with resolve_for_flow_run from the pool stored on the server."""
    from prefect.client.orchestration import get_client
    from prefect_kubernetes.worker import KubernetesWorker

    template, pool, deployment, flow, flow_run, _ = registered("kind")

    async def worker_view():
        async with get_client() as client:
            cfg = await KubernetesWorker.job_configuration.resolve_for_flow_run(
                flow_run, client=client, work_pool=copy.deepcopy(pool), worker_name="w-1"
            )
            return cfg.job_manifest

    expected = asyncio.run(worker_view())
    ours = jt.job_manifest_for_flow_run(template, flow_run, deployment, flow, work_pool=pool, worker_name="w-1")
    assert ours == expected
