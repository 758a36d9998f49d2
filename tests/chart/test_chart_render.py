"""helm lint and helm template of charts/echoflow: every object strictly valid for
Kubernetes 1.29 and 1.35, labels, security contexts, resources, and each component."""

from __future__ import annotations

import json
import re

import jobtemplate as jt
import pytest
from chartcases import KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS

FULL = f"{RELEASE}"  # the release name contains the chart name: fullname == release
SERVER_URL = f"http://{FULL}-server.{NAMESPACE}.svc.cluster.local:4200/api"
CLOUD_URL = (
    "https://api.prefect.cloud/api/accounts/00000000-0000-0000-0000-000000000000"
    "/workspaces/00000000-0000-0000-0000-000000000000"
)
QUANTITY = re.compile(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
WORKLOAD_KINDS = {"Deployment", "Job", "Pod"}


def pod_specs(objects):
    """(object, pod spec) of every workload, plus the flow-run Job of the base job template."""
    out = []
    for o in objects:
        if o["kind"] in {"Deployment", "Job"}:
            out.append((o, o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o, o["spec"]))
    template = jt.base_job_template(objects)
    job = template["job_configuration"]["job_manifest"]
    out.append(({"kind": "Job", "metadata": {"name": "flow-run (base job template)"}}, job["spec"]["template"]["spec"]))
    return out


def containers(pod_spec):
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def one(objects, kind, name):
    found = jt.find(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in jt.find(objects, kind)]}"
    return found[0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


# ---------------------------------------------------------------------------- lint


def test_lint_strict(helm_bin):
    proc = jt.helm("lint", "--strict", str(jt.CHART), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values_file", sorted(p.name for p in jt.K8S.glob("values-*.yaml")))
def test_lint_strict_with_example_values(helm_bin, values_file):
    proc = jt.helm("lint", "--strict", str(jt.CHART), "-f", str(jt.K8S / values_file), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("kube", sorted(KUBE_VERSIONS))
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_is_strictly_valid(render, value_set, kube):
    objects = render(value_set, kube)
    assert len(objects) >= 8
    errors = [e for o in objects for e in jt.validation_errors(o, versions=(kube,))]
    assert errors == []


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_flow_run_job_skeleton_is_valid(render, value_set):
    """The base job template's Job with placeholders swapped for typical values."""
    template = jt.base_job_template(render(value_set))
    job = json.loads(json.dumps(template["job_configuration"]["job_manifest"]))
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    env = [{"name": k, "value": v} for k, v in defaults["env"].items()]

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and node.startswith("{{ ") and node.endswith(" }}"):
            name = node[3:-3]
            return {
                "env": env,
                "command": ["prefect", "flow-run", "execute"],
                "name": "run",
                "labels": defaults["labels"],
            }.get(name, defaults.get(name))
        if isinstance(node, str) and node == "{{ name }}-":
            return "run-"
        return node

    assert jt.validation_errors(jt.as_stored(fill(job))) == []


# ---------------------------------------------------------------------------- objects


def kinds_and_names(objects):
    return sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects)


def test_default_objects(render):
    ns = NAMESPACE
    assert kinds_and_names(render("defaults")) == sorted(
        [
            ("ServiceAccount", f"{FULL}-worker", ns),
            ("ServiceAccount", f"{FULL}-flow-run", ns),
            ("ServiceAccount", f"{FULL}-client", ns),
            ("Role", f"{FULL}-worker", ns),
            ("RoleBinding", f"{FULL}-worker", ns),
            ("ConfigMap", f"{FULL}-base-job-template", ns),
            ("Secret", f"{FULL}-api-auth", ns),
            ("NetworkPolicy", f"{FULL}-server", ns),
            ("LimitRange", f"{FULL}-flow-runs", ns),
            ("Deployment", f"{FULL}-worker", ns),
            ("Deployment", f"{FULL}-server", ns),
            ("Service", f"{FULL}-server", ns),
            ("PersistentVolumeClaim", f"{FULL}-server", ns),
            ("Job", f"{FULL}-deploy", ns),
            ("Pod", f"{FULL}-test", ns),
        ]
    )


@pytest.mark.parametrize("value_set", ["prefect-cloud", "existing-server"])
def test_no_server_with_external_api(render, value_set):
    objects = render(value_set)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not any("server" in n for _, n in names), names
    assert not jt.find(objects, "PersistentVolumeClaim")
    assert {("Deployment", f"{FULL}-worker"), ("Job", f"{FULL}-deploy"), ("Pod", f"{FULL}-test")} <= names


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_standard_labels(render, value_set):
    expected = {
        "helm.sh/chart": "echoflow-0.1.0",
        "app.kubernetes.io/name": "echoflow",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/part-of": "echoflow",
    }
    for o in render(value_set):
        labels = o["metadata"].get("labels", {})
        where = f"{o['kind']}/{o['metadata']['name']}"
        assert {k: labels.get(k) for k in expected} == expected, where
        assert labels.get("app.kubernetes.io/component"), where
        if o["kind"] in {"Deployment", "Job"}:
            pod_labels = o["spec"]["template"]["metadata"]["labels"]
            assert {k: pod_labels.get(k) for k in expected} == expected, where
            assert pod_labels["app.kubernetes.io/component"] == labels["app.kubernetes.io/component"]
        if o["kind"] == "Deployment":
            selector = o["spec"]["selector"]["matchLabels"]
            assert set(selector) == {
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            }, where
            assert selector.items() <= o["spec"]["template"]["metadata"]["labels"].items(), where


def test_service_selects_the_server_pods(render):
    objects = render("defaults")
    service = one(objects, "Service", f"{FULL}-server")
    server = one(objects, "Deployment", f"{FULL}-server")
    assert service["spec"]["selector"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    worker = one(objects, "Deployment", f"{FULL}-worker")
    assert not service["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 4200, "targetPort": "http", "protocol": "TCP"}]


def test_common_labels_reach_every_object(helm_bin):
    objects = jt.render_chart(set_values={"commonLabels.team": "acoustics"})
    assert all(o["metadata"]["labels"].get("team") == "acoustics" for o in objects)


# ---------------------------------------------------------------------------- security


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_restricted_security_contexts(render, value_set):
    objects = render(value_set)
    home = "/home/jovyan"
    for owner, pod in pod_specs(objects):
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in containers(pod):
            cwhere = f"{where} container {c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, cwhere
            assert sc["allowPrivilegeEscalation"] is False, cwhere
            assert sc["capabilities"] == {"drop": ["ALL"]}, cwhere
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, cwhere
            assert sc["readOnlyRootFilesystem"] is True, cwhere
            assert "privileged" not in sc, cwhere
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            # Writable places on a read-only root: /tmp and HOME (PREFECT_HOME below it).
            assert mounts.get("/tmp") in empty_dirs, cwhere
            assert mounts.get(home) in empty_dirs, cwhere
        if owner["metadata"]["name"] != f"{FULL}-worker":
            assert pod.get("automountServiceAccountToken") is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where


# ---------------------------------------------------------------------------- resources


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_container_has_resources(render, value_set):
    objects = render(value_set)
    for owner, pod in pod_specs(objects):
        if owner["metadata"]["name"] == "flow-run (base job template)":
            continue  # placeholders; checked through the variables' defaults below
        for c in containers(pod):
            where = f"{owner['kind']}/{owner['metadata']['name']} {c['name']}"
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert set(res[kind]) >= {"cpu", "memory"}, where
                for q in res[kind].values():
                    assert isinstance(q, str) and QUANTITY.match(q), (where, q)
    variables = jt.base_job_template(objects)["variables"]["properties"]
    for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert QUANTITY.match(variables[name]["default"]), (name, variables[name]["default"])


def test_resources_from_values(helm_bin):
    objects = jt.render_chart(
        set_values={
            "worker.resources.requests.cpu": "300m",
            "worker.resources.limits.memory": "3Gi",
            "flowRuns.resources.requests.memory": "20Gi",
            "flowRuns.resources.limits.cpu": 6,
        }
    )
    worker = one(objects, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"] == {
        "requests": {"cpu": "300m", "memory": "384Mi"},
        "limits": {"cpu": "1", "memory": "3Gi"},
    }
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["memory_request"]["default"] == "20Gi"
    assert variables["cpu_limit"]["default"] == "6"


def test_unset_flow_run_limits_become_null(helm_bin):
    objects = jt.render_chart(
        set_values={
            "flowRuns.resources.limits.cpu": None,
            "flowRuns.activeDeadlineSeconds": None,
            "flowRuns.ttlSecondsAfterFinished": None,
        }
    )
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["cpu_limit"]["default"] is None
    assert variables["active_deadline_seconds"]["default"] is None
    assert variables["finished_job_ttl"]["default"] is None
    assert variables["memory_limit"]["default"] == "16Gi"


# ---------------------------------------------------------------------------- components


def test_worker_deployment(render):
    objects = render("defaults")
    dep = one(objects, "Deployment", f"{FULL}-worker")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "echoflow:0.1.0"
    assert c["command"] == [
        "prefect",
        "worker",
        "start",
        "--type",
        "kubernetes",
        "--pool",
        "echoflow",
        "--name",
        "$(POD_NAME)",
        "--base-job-template",
        "/etc/echoflow/base-job-template.json",
        "--with-healthcheck",
        "--install-policy",
        "never",
    ]
    env = env_of(c)
    assert env["PREFECT_API_URL"]["value"] == SERVER_URL
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PREFECT_WORKER_WEBSERVER_PORT"]["value"] == "8080"
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"]["value"] == NAMESPACE
    assert env["PREFECT_HOME"]["value"] == "/home/jovyan/.prefect"
    assert "PREFECT_API_KEY" not in env
    assert c["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "health"}, probe
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    bjt = mounts["/etc/echoflow/base-job-template.json"]
    assert bjt["subPath"] == "base-job-template.json" and bjt["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[bjt["name"]]["configMap"]["name"] == f"{FULL}-base-job-template"
    assert pod["serviceAccountName"] == f"{FULL}-worker"
    (init,) = pod["initContainers"]
    assert init["command"] == ["echoflow", "cluster", "wait-for-api", "--timeout", "600"]
    assert env_of(init)["PREFECT_API_URL"]["value"] == SERVER_URL
    assert "checksum/base-job-template" in dep["spec"]["template"]["metadata"]["annotations"]


def test_worker_limit_and_checksum(helm_bin):
    a = jt.render_chart(set_values={"worker.limit": 4})
    b = jt.render_chart(set_values={"worker.limit": 4, "flowRuns.resources.limits.memory": "20Gi"})
    worker_a = one(a, "Deployment", f"{FULL}-worker")["spec"]["template"]
    worker_b = one(b, "Deployment", f"{FULL}-worker")["spec"]["template"]
    assert worker_a["spec"]["containers"][0]["command"][-2:] == ["--limit", "4"]
    assert (
        worker_a["metadata"]["annotations"]["checksum/base-job-template"]
        != worker_b["metadata"]["annotations"]["checksum/base-job-template"]
    )


def test_server_deployment_sqlite(render):
    objects = render("defaults")
    dep = one(objects, "Deployment", f"{FULL}-server")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert c["command"] == ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
    env = env_of(c)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"]["value"] == "sqlite+aiosqlite:////data/prefect.db"
    assert env["PREFECT_UI_STATIC_DIRECTORY"]["value"].startswith("/home/jovyan/")
    assert env["PREFECT_UI_API_URL"]["value"] == "http://localhost:4200/api"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == f"{FULL}-server"
    assert c["startupProbe"]["httpGet"]["path"] == "/api/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    pvc = one(objects, "PersistentVolumeClaim", f"{FULL}-server")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_server_deployment_postgres(render):
    objects = render("postgres")
    assert not jt.find(objects, "PersistentVolumeClaim")
    (c,) = one(objects, "Deployment", f"{FULL}-server")["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["PREFECT_API_DATABASE_CONNECTION_URL"] == {
        "name": "PREFECT_API_DATABASE_CONNECTION_URL",
        "valueFrom": {"secretKeyRef": {"name": "prefect-db", "key": "connection-url"}},
    }
    assert "/data" not in {m["mountPath"] for m in c["volumeMounts"]}


def test_deploy_hook(render):
    objects = render("defaults")
    job = one(objects, "Job", f"{FULL}-deploy")
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install,post-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == [
        "echoflow",
        "deploy",
        "--pool",
        "echoflow",
        "--create-pool",
        "--base-job-template",
        "/etc/echoflow/base-job-template.json",
        "--image",
        "echoflow:0.1.0",
        "--deployment-name",
        "echoflow",
    ]
    assert env_of(c)["PREFECT_API_URL"]["value"] == SERVER_URL
    (init,) = pod["initContainers"]
    assert init["name"] == "wait-for-api"
    assert init["command"] == ["echoflow", "cluster", "wait-for-api", "--timeout", "600"]
    assert pod["serviceAccountName"] == f"{FULL}-client"
    # The ConfigMap the hook mounts is an ordinary resource, so it exists at post-install.
    cm = one(objects, "ConfigMap", f"{FULL}-base-job-template")
    assert "helm.sh/hook" not in cm["metadata"].get("annotations", {})
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["name"] for m in c["volumeMounts"]} | {m["name"] for m in init["volumeMounts"]}
    assert {volumes[n].get("configMap", {}).get("name") for n in mounted} >= {f"{FULL}-base-job-template"}
    assert not jt.find(objects, "ConfigMap", f"{FULL}-scripts")  # commands live in the image


def test_deploy_hook_concurrency_limit_and_images(helm_bin):
    objects = jt.render_chart(
        set_values={
            "workPool.concurrencyLimit": 20,
            "workPool.name": "sonar-pool",
            "flowRuns.image.repository": "reg/echoflow-runs",
            "flowRuns.image.tag": "9",
        }
    )
    (c,) = one(objects, "Job", f"{FULL}-deploy")["spec"]["template"]["spec"]["containers"]
    assert c["command"][c["command"].index("--pool") + 1] == "sonar-pool"
    assert c["command"][c["command"].index("--image") + 1] == "reg/echoflow-runs:9"
    assert c["command"][-2:] == ["--concurrency-limit", "20"]
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["image"]["default"] == "reg/echoflow-runs:9"


def test_helm_test_pod(render):
    pod = one(render("defaults"), "Pod", f"{FULL}-test")
    assert pod["metadata"]["annotations"] == {
        "helm.sh/hook": "test",
        "helm.sh/hook-delete-policy": "before-hook-creation",
    }
    (c,) = pod["spec"]["containers"]
    # The deployments come from echoflow.deploy.FLOWS in the image, named <flow>/echoflow.
    assert c["command"] == [
        "echoflow",
        "cluster",
        "check",
        "--pool",
        "echoflow",
        "--deployment-name",
        "echoflow",
        "--base-job-template",
        "/etc/echoflow/base-job-template.json",
        "--require-worker",
        "--timeout",
        "300",
    ]
    assert pod["spec"]["restartPolicy"] == "Never"


def test_helm_test_skips_deployments_without_the_hook(helm_bin):
    objects = jt.render_chart(set_values={"deployments.enabled": False})
    assert not jt.find(objects, "Job")
    (c,) = one(objects, "Pod", f"{FULL}-test")["spec"]["containers"]
    assert "--deployment-name" not in c["command"]


def test_prefect_cloud(render):
    objects = render("prefect-cloud")
    key_ref = {"secretKeyRef": {"name": "prefect-api-key", "key": "key"}}
    for kind, name in [("Deployment", f"{FULL}-worker"), ("Job", f"{FULL}-deploy"), ("Pod", f"{FULL}-test")]:
        o = one(objects, kind, name)
        pod = o["spec"] if kind == "Pod" else o["spec"]["template"]["spec"]
        for c in containers(pod):
            env = env_of(c)
            assert env["PREFECT_API_URL"]["value"] == CLOUD_URL, (name, c["name"])
            assert env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "valueFrom": key_ref}
    worker_env = env_of(one(objects, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"][0])
    # The worker hands flow runs the key by secretKeyRef (KubernetesWorker._replace_api_key_with_secret).
    assert worker_env["PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_KEY_SECRET_NAME"]["value"] == "prefect-api-key"
    assert worker_env["PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_KEY_SECRET_KEY"]["value"] == "key"
    rendered = json.dumps(objects)
    assert "pnu_" not in rendered


def test_existing_server(render):
    objects = render("existing-server")
    (c,) = one(objects, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["PREFECT_API_URL"]["value"] == "http://prefect-server.prefect.svc.cluster.local:4200/api"
    assert "PREFECT_API_KEY" not in env_of(c)


def test_flow_runs_in_another_namespace(render):
    objects = render("jobs-namespace")
    for kind, name in [
        ("Role", f"{FULL}-worker"),
        ("RoleBinding", f"{FULL}-worker"),
        ("ServiceAccount", f"{FULL}-flow-run"),
    ]:
        assert one(objects, kind, name)["metadata"]["namespace"] == "echoflow-jobs"
    binding = one(objects, "RoleBinding", f"{FULL}-worker")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULL}-worker", "namespace": NAMESPACE}]
    (c,) = one(objects, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"]["value"] == "echoflow-jobs"
    configuration = jt.base_job_template(objects)["job_configuration"]
    assert configuration["namespace"] == "echoflow-jobs"
    assert configuration["job_manifest"]["metadata"]["namespace"] == "echoflow-jobs"
    (container,) = configuration["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "echoflow-s3"}}]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_references_resolve(render, value_set):
    """ConfigMaps and ServiceAccounts that pods name are rendered by the chart."""
    objects = render(value_set)
    config_maps = {o["metadata"]["name"] for o in jt.find(objects, "ConfigMap")}
    accounts = {(o["metadata"]["name"], o["metadata"]["namespace"]) for o in jt.find(objects, "ServiceAccount")}
    for owner, pod in pod_specs(objects)[:-1]:
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, where
        assert (pod["serviceAccountName"], owner["metadata"]["namespace"]) in accounts, where
        names = {v["name"] for v in pod.get("volumes", [])}
        for c in containers(pod):
            assert {m["name"] for m in c.get("volumeMounts", [])} <= names, where
    configuration = jt.base_job_template(objects)["job_configuration"]
    pod = configuration["job_manifest"]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], configuration["namespace"]) in accounts


def test_image_tag_default_and_override(helm_bin):
    objects = jt.render_chart(set_values={"image.repository": "ghcr.io/x/echoflow", "image.tag": "1.2.3"})
    (c,) = one(objects, "Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/x/echoflow:1.2.3"
    (s,) = one(objects, "Deployment", f"{FULL}-server")["spec"]["template"]["spec"]["containers"]
    assert s["image"] == "ghcr.io/x/echoflow:1.2.3"
    assert jt.base_job_template(objects)["variables"]["properties"]["image"]["default"] == "ghcr.io/x/echoflow:1.2.3"


def test_fullname_override_and_long_release(helm_bin):
    objects = jt.render_chart(release="a-very-long-release-name-for-echoflow-on-a-cluster-x")
    for o in objects:
        assert len(o["metadata"]["name"]) <= 63, o["metadata"]["name"]
    objects = jt.render_chart(set_values={"fullnameOverride": "sonar"})
    assert one(objects, "Deployment", "sonar-worker")


def test_notes(helm_bin):
    proc = jt.helm("install", RELEASE, str(jt.CHART), "--namespace", NAMESPACE, "--dry-run=client")
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert (
        "prefect deployment run 'convert-batch/echoflow' \\\n"
        "     -p sources='[\"s3://my-bucket/raw/DY1801/EK60/*.raw\"]' \\\n"
        "     -p sonar_model=EK60 \\\n"
        "     -p output_prefix=s3://my-bucket/converted/DY1801"
    ) in notes
    assert f"kubectl get jobs -n {NAMESPACE} -l prefect.io/flow-run-id -w" in notes
    assert f"kubectl logs -n {NAMESPACE} -f job/" in notes
    assert f"kubectl port-forward -n {NAMESPACE} svc/{FULL}-server 4200:4200" in notes
    cloud = jt.helm(
        "install",
        RELEASE,
        str(jt.CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "-f",
        str(jt.K8S / "values-prefect-cloud.yaml"),
    ).stdout
    assert "port-forward" not in cloud.split("NOTES:", 1)[1]
    assert f"export PREFECT_API_URL={CLOUD_URL}" in cloud


def test_quantity_pattern_shared_by_schema_and_template(render):
    schema = json.loads((jt.CHART / "values.schema.json").read_text())
    pattern = schema["definitions"]["quantity"]["oneOf"][0]["pattern"]
    assert pattern == QUANTITY.pattern
    variables = jt.base_job_template(render("defaults"))["variables"]["properties"]
    for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert variables[name]["anyOf"][0]["pattern"] == pattern
