"""RBAC: the worker's Role grants exactly what prefect-kubernetes calls; nothing else
in the chart can reach the Kubernetes API."""

from __future__ import annotations

import importlib
import inspect
import re

import jobtemplate as jt
import pytest
import yaml
from chartcases import NAMESPACE, RELEASE, VALUE_SETS

# One rule per call site (see the comments in templates/role.yaml).
EXPECTED_WORKER_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]

# Kubernetes client calls in prefect_kubernetes' worker and observer -> (group, resource, verb).
CALL_PERMISSIONS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    # Only with settings this chart does not use (create_secret_for_api_key,
    # store_env_as_secret) or when the observer watches all namespaces:
    "read_namespaced_secret": None,
    "create_namespaced_secret": None,
    "replace_namespaced_secret": None,
    "patch_namespaced_secret": None,
    "delete_namespaced_secret": None,
    "list_pod_for_all_namespaces": None,
}
# kopf watches (list + watch) of the resources named in @kopf.on.event.
KOPF_WATCHES = {("", "pods"), ("batch", "jobs")}


def granted(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_worker_role_rules_exact(render, value_set):
    objects = render(value_set)
    (role,) = jt.find(objects, "Role")
    assert role["metadata"]["name"] == f"{RELEASE}-worker"
    assert role["rules"] == EXPECTED_WORKER_RULES
    assert not jt.find(objects, "ClusterRole")
    assert not jt.find(objects, "ClusterRoleBinding")


def installed_source(module: str = "") -> str:
    """prefect_kubernetes' worker and observer source (or one of them: "worker", "observer")."""
    import prefect_kubernetes.observer as observer
    import prefect_kubernetes.worker as worker

    return "".join(inspect.getsource(m) for m in (worker, observer) if module in ("", m.__name__.rsplit(".")[-1]))


KOPF_EVENT = re.compile(r'kopf\.on\.event\(\s*(?:"([a-z]*)",\s*"v1",\s*)?"([a-z]+)"')


def kopf_handlers(source: str) -> dict[str, tuple[str, str]]:
    """handler function -> the (group, resource) kopf lists and watches for it, whether
    registered by decorator or by a call."""
    handlers = {}
    for m in KOPF_EVENT.finditer(source):
        after = re.search(r"\)\((\w+)\)|async def (\w+)", source[m.end() : m.end() + 300])
        assert after, f"no handler after {m.group(0)}"
        handlers[after.group(1) or after.group(2)] = (m.group(1) or "", m.group(2))
    return handlers


def test_role_matches_the_installed_prefect_kubernetes():
    """Every Kubernetes call in the installed worker and observer is covered by the Role,
    and every permission in the Role is used by some call."""
    source = installed_source()
    calls = set(
        re.findall(
            r"\.((?:create|read|list|delete|patch|replace|watch)_"
            r"(?:namespaced_[a-z_]+|[a-z_]+_for_all_namespaces))\(",
            source,
        )
    )
    unknown = calls - set(CALL_PERMISSIONS)
    assert not unknown, f"prefect-kubernetes makes calls this chart has not reviewed: {unknown}"

    needed = {CALL_PERMISSIONS[c] for c in calls if CALL_PERMISSIONS[c]}
    assert set(kopf_handlers(source).values()) == KOPF_WATCHES
    for group, resource in KOPF_WATCHES:
        needed |= {(group, resource, "list"), (group, resource, "watch")}
    assert granted(EXPECTED_WORKER_RULES) == needed


def documented_rules() -> list[tuple[str, dict]]:
    """templates/role.yaml's rules, each with the comment above it."""
    body = (jt.CHART / "templates" / "role.yaml").read_text().split("\nrules:\n", 1)[1]
    rules: list[tuple[list[str], list[str]]] = []
    comment: list[str] = []
    for line in body.splitlines():
        if line.strip().startswith("#"):
            comment.append(line.strip().lstrip("#").strip())
        elif line.strip().startswith("- "):
            rules.append((comment, [line]))
            comment = []
        elif rules and line.startswith("    "):
            rules[-1][1].append(line)
    return [(" ".join(c), yaml.safe_load("\n".join(r))[0]) for c, r in rules]


def test_each_rule_names_the_calls_that_need_it():
    """The comment above each rule says which prefect_kubernetes function makes which call
    (`worker.py F -> Api.call`, `observer.py kopf.on.event(...) F -> kopf list + watch`):
    each such function exists, makes that call (or is kopf's handler for that resource),
    and the call needs a permission of the rule below the comment, not of another."""
    rules = documented_rules()
    assert [r for _, r in rules] == EXPECTED_WORKER_RULES
    documented = set()
    for comment, rule in rules:
        claims = re.findall(r"(\w+)\.py (.+?) -> (kopf list \+ watch|\w+Api\.(\w+))", comment)
        assert claims, f"no call named above {rule}"
        for module, functions, target, call in claims:
            source = installed_source(module)
            names = re.findall(r"[A-Za-z_][\w.]*", re.sub(r"@?kopf\.on\.event\([^)]*\)", "", functions))
            assert names, comment
            for name in names:
                obj = importlib.import_module(f"prefect_kubernetes.{module}")
                for part in name.split("."):
                    obj = getattr(obj, part)  # the named function exists
                if call:
                    assert f".{call}(" in inspect.getsource(obj), f"{name} does not call {call}"
                    needed = {CALL_PERMISSIONS[call]}
                    documented.add(call)
                else:
                    group, resource = kopf_handlers(source)[name]
                    needed = {(group, resource, "list"), (group, resource, "watch")}
                assert needed <= granted([rule]), f"{name} -> {target} needs {needed}, not granted by {rule}"
    assert documented == {c for c, p in CALL_PERMISSIONS.items() if p}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_only_the_worker_is_bound(render, value_set):
    objects = render(value_set)
    bindings = jt.find(objects, "RoleBinding")
    assert len(bindings) == 1
    (binding,) = bindings
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{RELEASE}-worker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-worker", "namespace": NAMESPACE}]
    assert binding["metadata"]["namespace"] == jt.find(objects, "Role")[0]["metadata"]["namespace"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_flow_run_account_has_no_rights(render, value_set):
    objects = render(value_set)
    template = jt.base_job_template(objects)
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    flow_run_sa = pod["serviceAccountName"]
    (sa,) = jt.find(objects, "ServiceAccount", flow_run_sa)
    assert sa["automountServiceAccountToken"] is False
    subjects = [
        s
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for b in jt.find(objects, kind)
        for s in b.get("subjects", [])
    ]
    assert all(s["name"] != flow_run_sa for s in subjects)
    assert all(s["name"] != f"{RELEASE}-client" for s in subjects)
    assert pod["automountServiceAccountToken"] is False


def test_flow_run_account_annotations(render):
    objects = render("eks-irsa")
    (sa,) = jt.find(objects, "ServiceAccount", "echoflow-flow-run")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/echoflow-flow-runs"
    }
    gke = jt.render_chart(
        set_values={
            "flowRuns.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account": "echoflow@project.iam.gserviceaccount.com"
        }
    )
    (sa,) = jt.find(gke, "ServiceAccount", f"{RELEASE}-flow-run")
    assert sa["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "echoflow@project.iam.gserviceaccount.com"
    }


def test_existing_flow_run_account(helm_bin):
    objects = jt.render_chart(
        set_values={"flowRuns.serviceAccount.create": False, "flowRuns.serviceAccount.name": "sonar-runner"}
    )
    assert not jt.find(objects, "ServiceAccount", "sonar-runner")
    manifest = jt.base_job_template(objects)["job_configuration"]["job_manifest"]
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == "sonar-runner"
    assert all(s["name"] != "sonar-runner" for b in jt.find(objects, "RoleBinding") for s in b["subjects"])


def test_worker_disabled_drops_its_rbac(helm_bin):
    objects = jt.render_chart(set_values={"worker.enabled": False})
    assert not jt.find(objects, "Role") and not jt.find(objects, "RoleBinding")
    assert not jt.find(objects, "Deployment", f"{RELEASE}-worker")
    (pod,) = jt.find(objects, "Pod")
    assert "--require-worker" not in pod["spec"]["containers"][0]["command"]
