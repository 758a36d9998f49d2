"""Locked job variables: what a deployment or a run may change in the flow-run Job.

Abusive variables are refused by Prefect's own validation, the one that guards every
deployment and flow run the worker later picks up (prefect.server.api.validation, run by
a real server); legitimate ones still give a strictly valid Job through prefect-kubernetes'
own rendering. The LimitRange carries the resource maxima."""

from __future__ import annotations

import asyncio
import uuid

import jobtemplate as jt
import pytest
from chartcases import KUBE_VERSIONS, NAMESPACE, VALUE_SETS

PARAMS = {
    "sources": ["s3://archive/raw/DY1801/EK60/*.raw"],
    "sonar_model": "EK60",
    "output_prefix": "s3://converted/DY1801",
}

# (name, job variables) a caller could use to run its own code or reach Secrets, other
# namespaces, other nodes, the API's identity or the server's traffic.
ABUSIVE = [
    ("foreign image", {"image": "attacker.example/tools:latest"}),
    ("no image", {"image": None}),
    ("secret env_from", {"env_from": [{"secretRef": {"name": "prefect-db"}}]}),
    ("command", {"command": "sh -c 'cat /var/run/secrets/*'"}),
    ("namespace", {"namespace": "kube-system"}),
    ("service account", {"service_account_name": "cluster-admin"}),
    ("api url", {"env": {"PREFECT_API_URL": "http://attacker.example/api"}}),
    ("api auth", {"env": {"PREFECT_API_AUTH_STRING": "x"}}),
    ("lower-case api url", {"env": {"prefect_api_url": "http://attacker.example/api"}}),
    ("aws keys", {"env": {"AWS_SECRET_ACCESS_KEY": "x"}}),
    ("proxy", {"env": {"HTTPS_PROXY": "http://attacker.example:3128"}}),
    ("preload", {"env": {"LD_PRELOAD": "/tmp/x.so"}}),
    ("server label", {"labels": {"app.kubernetes.io/component": "server"}}),
    ("prefect label", {"labels": {"prefect.io/flow-run-id": "x"}}),
    ("node selector", {"node_selector": {"node-role.kubernetes.io/control-plane": ""}}),
    ("tolerations", {"tolerations": [{"operator": "Exists"}]}),
    ("annotations", {"annotations": {"iam.amazonaws.com/role": "admin"}}),
    ("image pull policy", {"image_pull_policy": "Always"}),
    ("longer deadline", {"active_deadline_seconds": 10**7}),
    ("no deadline", {"active_deadline_seconds": None}),
    ("bad quantity", {"memory_limit": "lots"}),
]
LEGITIMATE = {
    "cpu_request": "500m",
    "cpu_limit": 6,
    "memory_request": "4Gi",
    "memory_limit": "32Gi",
    "ephemeral_storage_request": "10Gi",
    "ephemeral_storage_limit": "80Gi",
    "env": {"PREFECT_LOGGING_LEVEL": "DEBUG", "ECHOFLOW_EXTRA": "1", "OMP_NUM_THREADS": "2"},
    "labels": {"team": "acoustics"},
    "name": "dy1801",
    "backoff_limit": 1,
    "active_deadline_seconds": 3600,
    "finished_job_ttl": 600,
}


async def _pool_and_deployment(template: dict, job_variables: dict | None = None):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool_name = f"locked-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool_name, type="kubernetes", base_job_template=template))
        flow_id = await client.create_flow_from_name("convert-batch")
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=f"d-{uuid.uuid4().hex[:6]}",
            work_pool_name=pool_name,
            entrypoint="echoflow.flows.batch:convert_batch",
            job_variables=job_variables or {},
        )
        return pool_name, deployment_id


@pytest.fixture(scope="module")
def pool(prefect_server, render):
    """The chart's template as a pool on a real server, with one deployment."""
    template = jt.base_job_template(render("defaults"))
    return (template, *asyncio.run(_pool_and_deployment(template)))


@pytest.mark.parametrize("variables", [v for _, v in ABUSIVE], ids=[n for n, _ in ABUSIVE])
def test_abusive_run_variables_are_refused(pool, variables):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    template, _, deployment_id = pool

    async def run():
        async with get_client() as client:
            return await client.create_flow_run_from_deployment(
                deployment_id, parameters=PARAMS, job_variables=variables
            )

    with pytest.raises(PrefectHTTPStatusError) as caught:
        asyncio.run(run())
    assert caught.value.response.status_code == 422
    assert "Validation failed" in caught.value.response.text


@pytest.mark.parametrize("variables", [v for _, v in ABUSIVE[:6]], ids=[n for n, _ in ABUSIVE[:6]])
def test_abusive_deployment_variables_are_refused(pool, variables):
    from prefect.exceptions import PrefectHTTPStatusError

    template, *_ = pool
    with pytest.raises(PrefectHTTPStatusError, match="Error creating deployment"):
        asyncio.run(_pool_and_deployment(template, variables))


def test_deploy_hooks_image_and_allowlist(prefect_server, helm_bin):
    """The hook's `--image` (job variable image) passes; an allowlisted image too."""
    objects = jt.render_chart(
        set_values={"flowRuns.image.allowed[0]": "registry.example/echoflow:0.2.0"}, namespace=NAMESPACE
    )
    template = jt.base_job_template(objects)
    assert template["variables"]["properties"]["image"]["enum"] == ["echoflow:0.1.0", "registry.example/echoflow:0.2.0"]
    for image in ("echoflow:0.1.0", "registry.example/echoflow:0.2.0"):
        asyncio.run(_pool_and_deployment(template, {"image": image}))


def test_image_registry_prefix(prefect_server, helm_bin):
    """flowRuns.image.allowedPrefix: any image under it, nothing beside it, never null."""
    from prefect.exceptions import PrefectHTTPStatusError

    objects = jt.render_chart(set_values={"flowRuns.image.allowedPrefix": "registry.example/team/"})
    template = jt.base_job_template(objects)
    for image in (
        "echoflow:0.1.0",
        "registry.example/team/echoflow:0.2.0",
        "registry.example/team/tools@sha256:" + "a" * 64,
    ):
        asyncio.run(_pool_and_deployment(template, {"image": image}))
    for image in (
        "registry.example/team-evil/x:1",
        "attacker.example/registry.example/team/x",
        "registry.example/team/",
        None,
    ):
        with pytest.raises(PrefectHTTPStatusError, match="Error creating deployment"):
            asyncio.run(_pool_and_deployment(template, {"image": image}))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_legitimate_variables_give_a_strictly_valid_job(pool, prefect_server, render, value_set):
    from prefect.client.orchestration import get_client

    template = jt.base_job_template(render(value_set))
    variables = dict(LEGITIMATE)
    if value_set in {"eks-irsa", "kind"}:  # within those files' deadlines
        variables["active_deadline_seconds"] = 1200

    async def build():
        pool_name, deployment_id = await _pool_and_deployment(template)
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(
                deployment_id, parameters=PARAMS, job_variables=variables
            )
            deployment = await client.read_deployment(deployment_id)
            flow = await client.read_flow(deployment.flow_id)
        return run, deployment, flow

    run, deployment, flow = asyncio.run(build())
    manifest = jt.job_manifest_for_flow_run(template, run, deployment, flow)
    assert jt.validation_errors(manifest, versions=tuple(KUBE_VERSIONS)) == []
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"cpu": 6, "memory": "32Gi", "ephemeral-storage": "80Gi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ECHOFLOW_EXTRA"] == "1" and env["ECHOFLOW_SCRATCH"] == "/scratch"
    labels = manifest["metadata"]["labels"]
    assert labels["team"] == "acoustics" and labels["app.kubernetes.io/component"] == "flow-run"
    # The locked parts are the chart's whatever the variables say.
    defaults = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == defaults["serviceAccountName"]
    assert container["image"] == template["variables"]["properties"]["image"]["default"]
    assert manifest["metadata"]["namespace"] == template["job_configuration"]["namespace"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_limit_range_caps_what_variables_can_ask(render, value_set):
    """The maxima live in a LimitRange in the flow-run namespace; the chart's own defaults
    fit under them, and containers without requests get small ones, not the maxima."""
    objects = render(value_set)
    (lr,) = jt.find(objects, "LimitRange")
    template = jt.base_job_template(objects)
    assert lr["metadata"]["namespace"] == template["job_configuration"]["namespace"]
    (item,) = lr["spec"]["limits"]
    assert item["type"] == "Container" and set(item["max"]) == {"cpu", "memory", "ephemeral-storage"}
    assert item["default"] == item["max"]
    assert item["defaultRequest"] == {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    props = template["variables"]["properties"]
    for var, res in [
        ("cpu_limit", "cpu"),
        ("memory_limit", "memory"),
        ("ephemeral_storage_limit", "ephemeral-storage"),
    ]:
        assert jt.quantity(props[var]["default"]) <= jt.quantity(item["max"][res]), (value_set, var)
    scratch = next(
        v
        for v in template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "scratch"
    )
    assert jt.quantity(scratch["emptyDir"]["sizeLimit"]) < jt.quantity(props["ephemeral_storage_limit"]["default"])


def test_limit_range_off_and_partial_maxima(helm_bin):
    assert not jt.find(jt.render_chart(set_values={"flowRuns.limitRange.enabled": False}), "LimitRange")
    (lr,) = jt.find(jt.render_chart(set_values={"flowRuns.maxResources.cpu": None}), "LimitRange")
    assert set(lr["spec"]["limits"][0]["max"]) == {"memory", "ephemeral-storage"}
    assert set(lr["spec"]["limits"][0]["defaultRequest"]) == {"memory", "ephemeral-storage"}
