"""Authenticated API and NetworkPolicy: who can reach the Prefect API, and where its
credentials live. Every value set: credentials only by secretKeyRef, in every client and
in the Job prefect-kubernetes' worker actually sends (canary values, a local stand-in for
the Kubernetes API capturing the create request)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jobtemplate as jt
import pytest
from chartcases import NAMESPACE, RELEASE, VALUE_SETS

FULL = RELEASE
CANARY_AUTH = "echoflow:canary-auth-5d1e0a"
CANARY_KEY = "pnu_canarykey4b7f2c"
# value set -> (Secret name, key) of the auth string the clients use, or None
AUTH = {
    "defaults": (f"{FULL}-api-auth", "auth-string"),
    "eks-irsa": (f"{FULL}-api-auth", "auth-string"),
    "kind": (f"{FULL}-api-auth", "auth-string"),
    "postgres": (f"{FULL}-api-auth", "auth-string"),
    "jobs-namespace": (f"{FULL}-api-auth", "auth-string"),
    "postgres-ha": ("prefect-auth", "auth-string"),
    "existing-server": ("prefect-auth", "auth-string"),
    "external-auth-jobs-namespace": ("prefect-auth", "auth-string"),
    "prefect-cloud": None,
    "open": None,
}
CLIENTS = [("Deployment", f"{FULL}-worker"), ("Job", f"{FULL}-deploy"), ("Pod", f"{FULL}-test")]


def pod_spec(o):
    return o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_every_value_set_is_classified():
    assert set(AUTH) == set(VALUE_SETS)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_clients_get_the_auth_string_by_reference(render, value_set):
    objects = render(value_set)
    expected = AUTH[value_set]
    for kind, name in CLIENTS:
        for c in [
            *pod_spec(jt.find(objects, kind, name)[0]).get("initContainers", []),
            *pod_spec(jt.find(objects, kind, name)[0])["containers"],
        ]:
            env = env_of(c)
            if expected is None:
                assert "PREFECT_API_AUTH_STRING" not in env, (name, c["name"])
            else:
                assert env["PREFECT_API_AUTH_STRING"] == {
                    "name": "PREFECT_API_AUTH_STRING",
                    "valueFrom": {"secretKeyRef": {"name": expected[0], "key": expected[1]}},
                }, (name, c["name"])
    worker_env = env_of(pod_spec(jt.find(objects, "Deployment", f"{FULL}-worker")[0])["containers"][0])
    prefix = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_"
    got = (worker_env.get(prefix + "NAME", {}).get("value"), worker_env.get(prefix + "KEY", {}).get("value"))
    assert got == (expected or (None, None))
    servers = jt.find(objects, "Deployment", f"{FULL}-server")
    for server in servers:
        env = env_of(pod_spec(server)["containers"][0])
        if expected is None:
            assert "PREFECT_SERVER_API_AUTH_STRING" not in env
        else:
            assert env["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"] == dict(
                zip(("name", "key"), expected)
            )


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_credential_as_a_plain_value(render, value_set):
    """Env entries that carry credentials are references; the generated Secret's value
    appears nowhere but in the Secret itself (in each namespace that needs it)."""
    objects = render(value_set)
    for o in objects:
        if o["kind"] not in {"Deployment", "Job", "Pod"}:
            continue
        spec = pod_spec(o)
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for e in c.get("env", []):
                if any(
                    w in e["name"] for w in ("AUTH_STRING", "API_KEY", "PASSWORD", "SECRET_ACCESS", "CONNECTION_URL")
                ) and not e["name"].endswith(("_SECRET_NAME", "_SECRET_KEY")):
                    assert "value" not in e or e["value"].startswith("sqlite"), (o["metadata"]["name"], e)
    secrets = jt.find(objects, "Secret")
    generated = [s for s in secrets if s["metadata"]["name"] == f"{FULL}-api-auth"]
    if AUTH[value_set] == (f"{FULL}-api-auth", "auth-string"):
        namespaces = {s["metadata"]["namespace"] for s in generated}
        flow_ns = jt.base_job_template(objects)["job_configuration"]["namespace"]
        assert namespaces == {NAMESPACE, flow_ns}
        values = {s["data"]["auth-string"] for s in generated}
        assert len(values) == 1  # one string, mirrored
        plain = base64.b64decode(values.pop()).decode()
        user, _, password = plain.partition(":")
        assert user == "echoflow" and len(password) == 40
        others = json.dumps([o for o in objects if o["kind"] != "Secret"])
        assert password not in others
        assert generated[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert not generated


def test_generated_secret_is_kept_across_renders_only_through_lookup():
    """`lookup` of the existing Secret is what keeps the string on upgrade: the template
    reads it back before generating (a render without a cluster gets a fresh one)."""
    text = (jt.CHART / "templates" / "secret-api-auth.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in text
    assert text.index("lookup") < text.index("range $ns")


# ---------------------------------------------------------------------------- the worker's Job


class _KubeApi(BaseHTTPRequestHandler):
    """The one call the worker makes here: create a Job. Stores the body, answers 201."""

    created: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).created.append((self.path, body))
        body.setdefault("metadata", {})
        body["metadata"].update(name=body["metadata"].get("generateName", "job-") + "x1", uid=str(uuid.uuid4()))
        data = json.dumps(body).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def kube_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _KubeApi.created
    server.shutdown()


def _worker_job(render, value_set, kube_url, monkeypatch):
    """The Job KubernetesWorker._create_job sends for a flow run, with the worker's
    environment as the chart renders it and its secretKeyRef'd values set to canaries."""
    from kubernetes_asyncio.client import ApiClient, Configuration
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, temporary_settings
    from prefect_kubernetes.worker import KubernetesWorker

    objects = render(value_set)
    template = jt.base_job_template(objects)
    worker = pod_spec(jt.find(objects, "Deployment", f"{FULL}-worker")[0])["containers"][0]
    for e in worker["env"]:
        if e["name"].startswith("PREFECT_INTEGRATIONS_KUBERNETES_WORKER_"):
            monkeypatch.setenv(e["name"], e["value"])
    names = {e["name"] for e in worker["env"]}
    updates = {}
    if "PREFECT_API_AUTH_STRING" in names:
        updates[PREFECT_API_AUTH_STRING] = CANARY_AUTH
    if "PREFECT_API_KEY" in names:
        updates[PREFECT_API_KEY] = CANARY_KEY

    async def run():
        pool = f"canary-{uuid.uuid4().hex[:6]}"
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template=template))
            flow_id = await client.create_flow_from_name("convert-batch")
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name="d", work_pool_name=pool, entrypoint="echoflow.flows.batch:convert_batch"
            )
            flow_run = await client.create_flow_run_from_deployment(deployment_id, parameters={})
            work_pool = await client.read_work_pool(pool)
        with temporary_settings(updates=updates):  # what the worker pod's env holds
            async with get_client() as client:
                configuration = await KubernetesWorker.job_configuration.resolve_for_flow_run(
                    flow_run, client=client, work_pool=work_pool, worker_name="worker-pod-0"
                )
            # Not entered as a context manager: that would start the cluster observer.
            worker_obj = KubernetesWorker(work_pool_name=pool, name="worker-pod-0")
            async with ApiClient(Configuration(host=kube_url)) as api:
                await worker_obj._create_job(configuration, api)

    asyncio.run(run())


@pytest.mark.parametrize("value_set", ["defaults", "prefect-cloud", "existing-server", "jobs-namespace"])
def test_worker_sends_credentials_only_by_reference(render, prefect_server, kube_api, monkeypatch, value_set):
    url, created = kube_api
    before = len(created)
    _worker_job(render, value_set, url, monkeypatch)
    ((path, job),) = created[before:]
    flow_ns = jt.base_job_template(render(value_set))["job_configuration"]["namespace"]
    assert path == f"/apis/batch/v1/namespaces/{flow_ns}/jobs"
    sent = json.dumps(job)
    assert CANARY_AUTH not in sent and CANARY_KEY not in sent
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    expected = AUTH[value_set]
    if expected:
        assert env["PREFECT_API_AUTH_STRING"]["valueFrom"] == {
            "secretKeyRef": {"name": expected[0], "key": expected[1]}
        }
    if value_set == "prefect-cloud":
        assert env["PREFECT_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "prefect-api-key", "key": "key"}}
    assert jt.validation_errors(job) == []


def test_without_the_chart_settings_the_worker_would_leak(render, prefect_server, kube_api, monkeypatch):
    """The check above can fail: without the worker's secret settings the canary is sent."""
    url, created = kube_api
    before = len(created)
    objects = copy.deepcopy(render("defaults"))  # the session's renders stay as they are
    worker = pod_spec(jt.find(objects, "Deployment", f"{FULL}-worker")[0])["containers"][0]
    worker["env"] = [e for e in worker["env"] if "AUTH_STRING_SECRET" not in e["name"]]
    _worker_job(lambda _: objects, "defaults", url, monkeypatch)
    ((_, job),) = created[before:]
    assert CANARY_AUTH in json.dumps(job)


# ---------------------------------------------------------------------------- NetworkPolicy


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_server_network_policy(render, value_set):
    objects = render(value_set)
    servers = jt.find(objects, "Deployment", f"{FULL}-server")
    policies = jt.find(objects, "NetworkPolicy", f"{FULL}-server")
    if not servers or value_set == "open":
        assert not policies
        return
    (policy,) = policies
    server_pod = servers[0]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= server_pod.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    release_peer, flow_peer, *extra = rule["from"]
    # Every chart pod that talks to the API is admitted, in the release namespace...
    for kind, name in CLIENTS:
        o = jt.find(objects, kind, name)[0]
        labels = o["metadata"]["labels"] if kind == "Pod" else o["spec"]["template"]["metadata"]["labels"]
        assert release_peer["podSelector"]["matchLabels"].items() <= labels.items(), name
    assert "namespaceSelector" not in release_peer
    # ...and the flow-run pods, in theirs, by the labels the Job template puts on them.
    manifest = jt.base_job_template(objects)["job_configuration"]["job_manifest"]
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert flow_peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert flow_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": manifest["metadata"]["namespace"]
    }
    if value_set == "postgres-ha":
        assert extra == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
            {"ipBlock": {"cidr": "10.8.0.0/16"}},
        ]
    else:
        assert extra == []


def test_exposed_without_auth_warns(helm_bin):
    def notes(*sets):
        args = ["install", RELEASE, str(jt.CHART), "--namespace", NAMESPACE, "--dry-run=client"]
        for s in sets:
            args += ["--set", s]
        return jt.helm(*args).stdout.split("NOTES:", 1)[1]

    assert "WARNING" not in notes()
    assert "WARNING" not in notes("server.service.type=LoadBalancer")
    warned = notes("server.auth.enabled=false", "server.service.type=LoadBalancer")
    assert "WARNING: the Prefect API is exposed (Service type LoadBalancer) WITHOUT authentication" in warned
    warned = notes("server.auth.enabled=false", "server.ingress.enabled=true", "server.ingress.host=ef.example.org")
    assert "Ingress ef.example.org" in warned and "WITHOUT authentication" in warned
    assert "has no authentication" in notes("server.auth.enabled=false")
    blocked = notes("server.ingress.enabled=true", "server.ingress.host=ef.example.org")
    assert "NetworkPolicy admits no ingress controller" in blocked
    assert "admits no ingress controller" not in notes(
        "server.ingress.enabled=true",
        "server.ingress.host=ef.example.org",
        "networkPolicy.extraFrom[0].namespaceSelector.matchLabels.team=ingress",
    )


def test_ingress(render):
    (ing,) = jt.find(render("postgres-ha"), "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["echoflow.example.org"], "secretName": "echoflow-tls"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": f"{FULL}-server", "port": {"name": "http"}}}
    assert not jt.find(render("defaults"), "Ingress")


def test_flow_run_egress_policy(render):
    """Opt-in: flow-run pods may reach DNS, the chart's server and the listed peers only."""
    assert not jt.find(render("defaults"), "NetworkPolicy", f"{FULL}-flow-runs")
    objects = render("jobs-namespace")
    (policy,) = jt.find(objects, "NetworkPolicy", f"{FULL}-flow-runs")
    manifest = jt.base_job_template(objects)["job_configuration"]["job_manifest"]
    assert policy["metadata"]["namespace"] == manifest["metadata"]["namespace"] == "echoflow-jobs"
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= manifest["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Egress"]
    dns, api, store = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    (server,) = jt.find(objects, "Deployment", f"{FULL}-server")
    (peer,) = api["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert peer["podSelector"]["matchLabels"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    assert api["ports"] == [
        {"port": server["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], "protocol": "TCP"}
    ]
    assert store == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
