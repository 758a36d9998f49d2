"""The pod replay honours or refuses every field of the chart's flow-run Job: a chart change
it does not model fails loudly instead of being dropped. No Docker needed: this checks the
`docker run` plan for the Job prefect-kubernetes renders from the chart's template."""

from __future__ import annotations

import copy
import sys
import uuid

import pytest
import replay
from samples import REPO

sys.path.insert(0, str(REPO / "tests" / "chart"))
import jobtemplate as jt  # noqa: E402

IMAGE = "echoflow:fields-test"
SECRETS = {
    "echoflow-s3": {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    },
    "echoflow-api-auth": {"auth-string": "admin:x"},
}


@pytest.fixture(scope="module")
def job(prefect_server) -> dict:
    from prefect.client.schemas.objects import FlowRun

    repository, _, tag = IMAGE.partition(":")
    template = jt.base_job_template(
        jt.render_chart(["k8s/values-kind.yaml"], {"image.repository": repository, "image.tag": tag})
    )
    run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="fields-test")
    return jt.as_stored(jt.job_manifest_for_flow_run(template, run))


def plan(job: dict, tmp_path, **kw) -> replay.Pod:
    return replay.plan_pod(
        job,
        kw.pop("secrets", SECRETS),
        {"EXTRA": "1"},
        node=kw.pop("node", replay.kind_worker_node()),
        volume_root=tmp_path / "v",
        **kw,
    )


def test_the_chart_job_maps_onto_docker_run(job, tmp_path):
    planned = plan(job, tmp_path)
    joined = " ".join(planned.argv)
    for flag in (
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--user 1000:1000",
        "--network host",
        "--pull=never",
        "--memory 3221225472",
        "--env EXTRA=1",
        "--env PREFECT__FLOW_RUN_ID=",
        "--env AWS_ENDPOINT_URL=http://127.0.0.1:9000",
    ):
        assert flag in joined, (flag, joined)
    assert IMAGE in planned.argv
    assert {p.name for p in (tmp_path / "v").iterdir()} == {"tmp", "home", "scratch"}
    assert planned.storage_limit == replay.quantity("3Gi")


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda j: pod(j).update(affinity={"nodeAffinity": {}}), replay.Unsupported),
        (lambda j: pod(j).update(initContainers=[{"name": "x", "image": "busybox"}]), replay.Unsupported),
        (lambda j: pod(j)["volumes"].append({"name": "cfg", "configMap": {"name": "x"}}), replay.Unsupported),
        (lambda j: ctr(j).update(ports=[{"containerPort": 80}]), replay.Unsupported),
        (lambda j: ctr(j)["securityContext"].update(procMount="Unmasked"), replay.Unsupported),
        (
            lambda j: ctr(j)["env"].append({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}),
            replay.Unsupported,
        ),
        (lambda j: pod(j).update(parallelism=1), replay.Unsupported),  # not as_stored()
        (lambda j: pod(j).update(automountServiceAccountToken=True), replay.Unsupported),
        (lambda j: ctr(j)["resources"]["requests"].update(memory="10Ti"), replay.PodRejected),
        (lambda j: ctr(j)["securityContext"].update(runAsUser=0), replay.PodRejected),
    ],
)
def test_unknown_fields_are_refused(job, tmp_path, change, error):
    bad = copy.deepcopy(job)
    change(bad)
    with pytest.raises(error):
        plan(bad, tmp_path)


def test_missing_secret_or_node_rejects_the_pod(job, tmp_path):
    with pytest.raises(replay.PodRejected, match="echoflow-s3"):
        plan(job, tmp_path, secrets={})
    with pytest.raises(replay.PodRejected, match="nodeSelector"):
        plan(job, tmp_path, node=replay.Node())


def test_value_from_resolves_as_the_kubelet_does(job, tmp_path):
    job = copy.deepcopy(job)
    ctr(job)["env"] += [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "echoflow-s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "REF", "value": "$(POD)/$$(POD)/$(NOPE)"},
    ]
    planned = plan(job, tmp_path)
    assert planned.env["POD"] == planned.name and planned.name.startswith(planned.job_name + "-")
    assert planned.env["KEY"] == "k"
    assert planned.env["MEM"] == "3072"
    assert planned.env["REF"] == f"{planned.name}/$(POD)/$(NOPE)"


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def ctr(job: dict) -> dict:
    return pod(job)["containers"][0]
