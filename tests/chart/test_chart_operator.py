"""Operator options: scheduling and pod extras on every pod, PDBs, server replicas only with
PostgreSQL, an existing flow-run ServiceAccount must be named, one image helper, and the
hook's concurrency limit going back to none on an upgrade."""

from __future__ import annotations

import asyncio
import re
import uuid

import jobtemplate as jt
from chartcases import RELEASE

FULL = RELEASE


def pod(objects, kind, name):
    (o,) = jt.find(objects, kind, name)
    return o["spec"] if kind == "Pod" else o["spec"]["template"]["spec"]


def fails(*sets: str) -> str:
    args = jt.template_args()
    for s in sets:
        args += ["--set", s]
    proc = jt.helm(*args, check=False)
    assert proc.returncode != 0, sets
    return proc.stderr


def test_existing_flow_run_account_must_be_named(helm_bin):
    err = fails("flowRuns.serviceAccount.create=false")
    assert "flowRuns/serviceAccount" in err and "name" in err


def test_server_replicas_need_postgres(helm_bin):
    assert "server.replicas > 1 needs PostgreSQL" in fails("server.replicas=2")
    objects = jt.render_chart(set_values={"server.replicas": 3, "server.database.existingSecret": "prefect-db"})
    (dep,) = jt.find(objects, "Deployment", f"{FULL}-server")
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["strategy"] == {"type": "RollingUpdate"}


def test_scheduling_and_extras_reach_every_pod(render):
    objects = render("postgres-ha")
    hook = pod(objects, "Job", f"{FULL}-deploy")
    assert hook["nodeSelector"] == {"pool": "system"}
    assert pod(objects, "Pod", f"{FULL}-test")["tolerations"] == [{"operator": "Exists"}]
    server = pod(objects, "Deployment", f"{FULL}-server")
    assert server["priorityClassName"] == "echoflow-high"
    assert server["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    (dep,) = jt.find(objects, "Deployment", f"{FULL}-server")
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "acoustics"
    worker = pod(objects, "Deployment", f"{FULL}-worker")
    assert worker["containers"][0]["envFrom"] == [{"configMapRef": {"name": "proxy-settings"}}]
    (svc,) = jt.find(objects, "Service", f"{FULL}-server")
    assert svc["metadata"]["annotations"] == {"example.org/team": "acoustics"}
    job_pod = jt.base_job_template(objects)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert job_pod["priorityClassName"] == "echoflow-batch"
    term = job_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"] == [{"key": "pool", "operator": "In", "values": ["conversions"]}]


def test_extra_volumes(helm_bin):
    objects = jt.render_chart(
        set_values={
            "worker.extraVolumes[0].name": "ca",
            "worker.extraVolumes[0].configMap.name": "corp-ca",
            "worker.extraVolumeMounts[0].name": "ca",
            "worker.extraVolumeMounts[0].mountPath": "/etc/ssl/corp",
        }
    )
    spec = pod(objects, "Deployment", f"{FULL}-worker")
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in spec["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corp"} in spec["containers"][0]["volumeMounts"]
    assert jt.validation_errors(jt.find(objects, "Deployment", f"{FULL}-worker")[0]) == []


def test_pod_disruption_budgets(render):
    objects = render("postgres-ha")
    for name in (f"{FULL}-server", f"{FULL}-worker"):
        (pdb,) = jt.find(objects, "PodDisruptionBudget", name)
        (dep,) = jt.find(objects, "Deployment", name)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not jt.find(render("defaults"), "PodDisruptionBudget")


def test_one_image_helper_and_one_object_per_template():
    templates = jt.CHART / "templates"
    helpers = "".join(p.read_text() for p in templates.glob("*.tpl"))
    assert len(re.findall(r'printf "%s:%s"', helpers)) == 1
    assert len(re.findall(r"define \"echoflow\.[a-zA-Z]*[iI]mage\"", helpers)) == 1
    for path in [*templates.glob("*.yaml"), *templates.glob("tests/*.yaml")]:
        text = path.read_text()
        kinds = re.findall(r"^kind: ", text, re.M)
        assert len(kinds) == 1, path.name


def test_component_images(helm_bin):
    objects = jt.render_chart(
        set_values={
            "image.repository": "reg/echoflow",
            "image.tag": "2.0",
            "server.image.repository": "reg/prefect",
            "flowRuns.image.tag": "2.0-gpu",
        }
    )
    assert pod(objects, "Deployment", f"{FULL}-server")["containers"][0]["image"] == "reg/prefect:2.0"
    assert pod(objects, "Deployment", f"{FULL}-worker")["containers"][0]["image"] == "reg/echoflow:2.0"
    assert pod(objects, "Deployment", f"{FULL}-worker")["initContainers"][0]["image"] == "reg/echoflow:2.0"
    image = jt.base_job_template(objects)["variables"]["properties"]["image"]
    assert image["default"] == "reg/echoflow:2.0-gpu" and image["enum"] == ["reg/echoflow:2.0-gpu"]


def _hook_deploy(objects, template_path):
    """The hook container's `echoflow deploy …` arguments, called in this process."""
    from echoflow.deploy import deploy

    (c,) = pod(objects, "Job", f"{FULL}-deploy")["containers"]
    args = c["command"]
    assert args[:2] == ["echoflow", "deploy"]

    def opt(flag):
        return args[args.index(flag) + 1] if flag in args else None

    limit = opt("--concurrency-limit")
    return deploy(
        opt("--pool"),
        opt("--image"),
        create_pool="--create-pool" in args,
        base_job_template=template_path,
        deployment_name=opt("--deployment-name"),
        concurrency_limit=None if limit is None else int(limit),
        flows=["convert-batch"],
    )


def test_concurrency_limit_null_after_50_clears_it(prefect_server, helm_bin, tmp_path):
    """An upgrade from workPool.concurrencyLimit=50 to null leaves no limit on the queue."""
    import json

    from prefect.client.orchestration import get_client

    from echoflow.deploy import WORK_QUEUE

    pool = f"limit-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "base-job-template.json"
    first = jt.render_chart(set_values={"workPool.name": pool, "workPool.concurrencyLimit": 50})
    path.write_text(json.dumps(jt.base_job_template(first)))

    async def queue_limit():
        async with get_client() as client:
            return (await client.read_work_queue_by_name(WORK_QUEUE, work_pool_name=pool)).concurrency_limit

    _hook_deploy(first, path)
    assert asyncio.run(queue_limit()) == 50
    second = jt.render_chart(set_values={"workPool.name": pool, "workPool.concurrencyLimit": None})
    changes = _hook_deploy(second, path)
    assert [(c.kind, c.action) for c in changes if c.kind == "queue"] == [("queue", "updated")]
    assert asyncio.run(queue_limit()) is None
