"""What a kubelet checks and resolves in a Job's pod spec before running it, field by field.

Every field is either honoured or refused: a field this module does not know raises
`Unsupported`, so a chart change cannot be silently ignored by the pod replay (replay.py).
`PodRejected` is a pod a cluster would not start (a missing Secret, runAsNonRoot as root,
requests above the node). Environment resolution is the kubelet's: cluster-injected values,
then envFrom, then env in order, with $(VAR) expansion, secretKeyRef / secretRef,
configMapKeyRef / configMapRef, fieldRef (name, namespace, uid, labels, node, IPs) and
resourceFieldRef.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]


def generated_suffix(n: int = 5) -> str:
    """A generated-name suffix in Kubernetes' alphabet (no vowels, no 0/1/3)."""
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


class Unsupported(ValueError):
    """A manifest field (or value) this replay does not know how to honour."""


class PodRejected(RuntimeError):
    """The pod would not start on a cluster (e.g. a missing Secret, runAsNonRoot as root)."""


# -- the fake node ---------------------------------------------------------------------------


@dataclass
class Node:
    name: str = "replay-node"
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float = float(os.cpu_count() or 1)
    memory: int = 0  # bytes; 0 = this host's memory

    def __post_init__(self) -> None:
        self.labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels}
        if not self.memory:
            self.memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def kind_worker_node(config: Path = REPO / "k8s" / "kind-config.yaml") -> Node:
    """The worker node of the kind cluster config, with its labels (flow-run nodeSelector)."""
    nodes = yaml.safe_load(config.read_text())["nodes"]
    workers = [n for n in nodes if n.get("role") == "worker"]
    if not workers:
        raise LookupError(f"{config}: no worker node")
    return Node(name="echoflow-worker", labels=dict(workers[0].get("labels") or {}))


# -- quantities ------------------------------------------------------------------------------

_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity as a number ("250m" -> 0.25, "3Gi" -> 3221225472)."""
    text = str(value).strip()
    for suffix, factor in _BIN.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    for suffix in sorted(_DEC, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * _DEC[suffix]
    return float(text)


# -- field checks ----------------------------------------------------------------------------

JOB = {"apiVersion", "kind", "metadata", "spec"}
JOB_META = {"name", "generateName", "namespace", "labels", "annotations"}
JOB_SPEC = {
    "backoffLimit",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "parallelism",
    "completions",
    "template",
}
TEMPLATE = {"metadata", "spec"}
POD_META = {"labels", "annotations"}
POD_SPEC = {
    "restartPolicy",
    "serviceAccountName",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "securityContext",
    "nodeSelector",
    "tolerations",
    "containers",
    "volumes",
    "terminationGracePeriodSeconds",
}
POD_SC = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seccompProfile"}
CONTAINER = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "envFrom",
    "workingDir",
    "resources",
    "securityContext",
    "volumeMounts",
}
CONTAINER_SC = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "capabilities",
    "seccompProfile",
    "privileged",
}
RESOURCES = {"requests", "limits"}
RESOURCE_NAMES = {"cpu", "memory", "ephemeral-storage"}
VOLUME = {"name", "emptyDir"}
EMPTY_DIR = {"medium", "sizeLimit"}
MOUNT = {"name", "mountPath", "readOnly"}
ENV = {"name", "value", "valueFrom"}
VALUE_FROM = {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}
KEY_REF = {"name", "key", "optional"}
ENV_FROM = {"secretRef", "configMapRef", "prefix"}
SOURCE_REF = {"name", "optional"}
TOLERATION = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _check(obj: Any, allowed: set[str], where: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise Unsupported(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise Unsupported(
            f"{where}: field(s) {', '.join(unknown)} not honoured by the replay (known: {', '.join(sorted(allowed))})"
        )
    return obj


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, the rest is kept."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i + 2 :]:
            end = text.index(")", i + 2)
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_ref(path: str, pod: dict[str, Any]) -> str:
    simple = {
        "metadata.name": pod["name"],
        "metadata.namespace": pod["namespace"],
        "metadata.uid": pod["uid"],
        "spec.nodeName": pod["node"].name,
        "spec.serviceAccountName": pod["serviceAccountName"],
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    for kind in ("labels", "annotations"):
        prefix = f"metadata.{kind}['"
        if path.startswith(prefix) and path.endswith("']"):
            return pod[kind].get(path[len(prefix) : -2], "")
    raise Unsupported(f"fieldRef {path!r} not honoured by the replay")


def _resource_ref(ref: dict, resources: dict, node: Node, where: str) -> str:
    _check(ref, {"resource", "containerName", "divisor"}, where)
    kind, _, name = ref["resource"].partition(".")
    value = (resources.get(kind) or {}).get(name)
    if value is None:  # Kubernetes falls back to the node's allocatable for unset limits
        value = node.cpus if name == "cpu" else node.memory
    divisor = quantity(ref.get("divisor", "1"))
    return str(int(-(-quantity(value) // divisor)))  # rounded up, as the kubelet does


def _lookup(store: Mapping[str, Mapping[str, str]], kind: str, ref: dict, where: str) -> Optional[Mapping[str, str]]:
    name = ref.get("name")
    if name in store:
        return store[name]
    if ref.get("optional"):
        return None
    raise PodRejected(f"{where}: {kind} {name!r} not found (the pod would fail with CreateContainerConfigError)")


def resolve_env(
    container: dict,
    pod: dict[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
    extra_env: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment: cluster-injected `extra_env`, then envFrom, then env (in order)."""
    env: dict[str, str] = dict(extra_env)
    for i, source in enumerate(container.get("envFrom") or []):
        where = f"envFrom[{i}]"
        _check(source, ENV_FROM, where)
        refs = [k for k in ("secretRef", "configMapRef") if k in source]
        if len(refs) != 1:
            raise Unsupported(f"{where}: needs exactly one of secretRef / configMapRef")
        kind = refs[0]
        ref = _check(source[kind], SOURCE_REF, f"{where}.{kind}")
        data = _lookup(
            secrets if kind == "secretRef" else config_maps,
            "Secret" if kind == "secretRef" else "ConfigMap",
            ref,
            where,
        )
        for key, value in (data or {}).items():
            env[source.get("prefix", "") + key] = str(value)
    for i, item in enumerate(container.get("env") or []):
        where = f"env[{i}] ({item.get('name')})"
        _check(item, ENV, where)
        if "valueFrom" in item:
            source = _check(item["valueFrom"], VALUE_FROM, f"{where}.valueFrom")
            if len(source) != 1:
                raise Unsupported(f"{where}.valueFrom: needs exactly one source")
            ((kind, ref),) = source.items()
            if kind in ("secretKeyRef", "configMapKeyRef"):
                _check(ref, KEY_REF, f"{where}.{kind}")
                data = _lookup(
                    secrets if kind == "secretKeyRef" else config_maps,
                    "Secret" if kind == "secretKeyRef" else "ConfigMap",
                    ref,
                    where,
                )
                if data is None:
                    continue
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodRejected(f"{where}: key {ref['key']!r} not in {ref['name']!r}")
                env[item["name"]] = str(data[ref["key"]])
            elif kind == "fieldRef":
                _check(ref, {"fieldPath", "apiVersion"}, f"{where}.fieldRef")
                env[item["name"]] = _field_ref(ref["fieldPath"], pod)
            else:
                env[item["name"]] = _resource_ref(ref, container.get("resources") or {}, pod["node"], where)
        else:
            env[item["name"]] = expand(str(item.get("value", "")), env)
    return env
