"""Run a Kubernetes Job manifest's pod with `docker run`, as a kubelet would.

The Job is the one prefect-kubernetes renders for a flow run (tests/chart/jobtemplate.py),
so what runs is the chart's template, the image and the image's own `prefect flow-run
execute`. Every manifest field is either honoured or refused: a field this module does
not know raises `Unsupported`, so a chart change cannot be silently ignored.

    argv = docker_run_args(job, secrets={"echoflow-s3": {...}})   # ["docker", "run", ...]
    result = run_job(job, secrets={"echoflow-s3": {...}})         # JobResult

How the pod spec maps onto `docker run`:
  image / imagePullPolicy       image, --pull never|missing|always
  command / args                --entrypoint + arguments; $(VAR) expanded as Kubernetes does
  env / envFrom                 --env, resolved here: secretKeyRef / secretRef from `secrets`,
                                configMapKeyRef / configMapRef from `config_maps`, fieldRef from
                                the fake pod (name, namespace, uid, labels, node, IPs),
                                resourceFieldRef from the container's resources
  workingDir                    --workdir
  securityContext               --user uid:gid, --group-add (fsGroup, supplementalGroups),
                                runAsNonRoot checked against the effective uid (numeric, not 0),
                                readOnlyRootFilesystem -> --read-only, capabilities -> --cap-drop /
                                --cap-add, allowPrivilegeEscalation false -> no-new-privileges,
                                seccompProfile RuntimeDefault -> Docker's default profile
                                (absent/Unconfined -> seccomp=unconfined), privileged -> --privileged
  emptyDir volumes              a fresh host directory per pod, mode 0777 (2777 and group fsGroup
                                with fsGroup), bind-mounted (not --tmpfs: Docker gives a tmpfs the
                                mode of the image's directory, and it would count as memory);
                                usage above sizeLimit fails the pod as an eviction would
  resources.limits              --memory (= --memory-swap: no swap), --cpus (capped at the node's
                                CPUs, as a limit above capacity is allowed)
  resources.requests            must fit the node (else the pod would stay Pending) and the limits
  nodeSelector / tolerations    checked against the fake `Node` (its labels; it has no taints)
  automountServiceAccountToken  must be false (no API token is mounted here)
  restartPolicy / backoffLimit  Never|OnFailure; a failed pod is retried backoffLimit times
  activeDeadlineSeconds         the Job is stopped (grace period) and fails with DeadlineExceeded
  terminationGracePeriodSeconds docker stop -t
  metadata labels               --label
Networking is `--network host`: the Prefect API and S3 are loopback addresses of the host
(the pod's HOSTNAME is set to the pod name, as --hostname cannot be used with it).
"""

from __future__ import annotations

import copy
import json
import os
import secrets as _random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "chart"))

import jobtemplate as jt  # noqa: E402


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
JOB_SPEC = {"backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "parallelism",
            "completions", "template"}
TEMPLATE = {"metadata", "spec"}
POD_META = {"labels", "annotations"}
POD_SPEC = {"restartPolicy", "serviceAccountName", "automountServiceAccountToken", "imagePullSecrets",
            "securityContext", "nodeSelector", "tolerations", "containers", "volumes",
            "terminationGracePeriodSeconds"}
POD_SC = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seccompProfile"}
CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "workingDir",
             "resources", "securityContext", "volumeMounts"}
CONTAINER_SC = {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
                "readOnlyRootFilesystem", "capabilities", "seccompProfile", "privileged"}
RESOURCES = {"requests", "limits"}
RESOURCE_NAMES = {"cpu", "memory"}
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
        raise Unsupported(f"{where}: field(s) {', '.join(unknown)} not honoured by the replay "
                          f"(known: {', '.join(sorted(allowed))})")
    return obj


# -- the pod ---------------------------------------------------------------------------------


def _suffix(n: int = 5) -> str:
    # Kubernetes' generated-name alphabet: no vowels, no 0/1/3.
    return "".join(_random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


@dataclass
class Pod:
    """What the replay decided to run for one pod of a Job (the docker argv and its context)."""

    job_name: str
    name: str
    namespace: str
    argv: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    deadline: Optional[float]
    backoff_limit: int
    grace: int
    image: str
    user: Optional[str]
    empty_dirs: dict[str, tuple[Path, Optional[float]]]  # volume name -> (host dir, sizeLimit bytes)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, the rest is kept."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i + 2:]:
            end = text.index(")", i + 2)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_ref(path: str, pod: dict[str, Any]) -> str:
    simple = {
        "metadata.name": pod["name"], "metadata.namespace": pod["namespace"], "metadata.uid": pod["uid"],
        "spec.nodeName": pod["node"].name, "spec.serviceAccountName": pod["serviceAccountName"],
        "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    for kind in ("labels", "annotations"):
        prefix = f"metadata.{kind}['"
        if path.startswith(prefix) and path.endswith("']"):
            return pod[kind].get(path[len(prefix):-2], "")
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


def resolve_env(container: dict, pod: dict[str, Any], secrets: Mapping[str, Mapping[str, str]],
                config_maps: Mapping[str, Mapping[str, str]], extra_env: Mapping[str, str]) -> dict[str, str]:
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
        data = _lookup(secrets if kind == "secretRef" else config_maps,
                       "Secret" if kind == "secretRef" else "ConfigMap", ref, where)
        for key, value in (data or {}).items():
            env[source.get("prefix", "") + key] = str(value)
    for i, item in enumerate(container.get("env") or []):
        where = f"env[{i}] ({item.get('name')})"
        _check(item, ENV, where)
        if "valueFrom" in item:
            source = _check(item["valueFrom"], VALUE_FROM, f"{where}.valueFrom")
            if len(source) != 1:
                raise Unsupported(f"{where}.valueFrom: needs exactly one source")
            (kind, ref), = source.items()
            if kind in ("secretKeyRef", "configMapKeyRef"):
                _check(ref, KEY_REF, f"{where}.{kind}")
                data = _lookup(secrets if kind == "secretKeyRef" else config_maps,
                               "Secret" if kind == "secretKeyRef" else "ConfigMap", ref, where)
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


def _empty_dir_permissions(path: Path, fs_group: Optional[int]) -> None:
    if fs_group is None:
        path.chmod(0o777)
        return
    try:
        os.chown(path, -1, int(fs_group))
    except PermissionError:
        pass  # not root: the dir stays world-writable, which is what matters to the pod
    path.chmod(0o2777)


def _image_user(image: str) -> str:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}", image],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise PodRejected(f"image {image!r} not found locally ({out.stderr.strip()}): "
                          "with imagePullPolicy Never the pod fails with ErrImageNeverPull")
    return out.stdout.strip()


def plan_pod(job_manifest: dict, secrets: Mapping[str, Mapping[str, str]] | None = None,
             extra_env: Mapping[str, str] | None = None, *, config_maps: Mapping[str, Mapping[str, str]] | None = None,
             node: Optional[Node] = None, container_name: Optional[str] = None,
             volume_root: Optional[Path] = None) -> Pod:
    """Check the Job manifest field by field and turn its pod into a `docker run` argv."""
    job = copy.deepcopy(job_manifest)
    node = node or Node()
    _check(job, JOB, "Job")
    if (job.get("apiVersion"), job.get("kind")) != ("batch/v1", "Job"):
        raise Unsupported(f"not a batch/v1 Job: {job.get('apiVersion')} {job.get('kind')}")
    meta = _check(job.get("metadata"), JOB_META, "metadata")
    spec = _check(job.get("spec"), JOB_SPEC, "spec")
    for key in ("parallelism", "completions"):
        if spec.get(key, 1) != 1:
            raise Unsupported(f"spec.{key}={spec[key]}: the replay runs one pod at a time")
    template = _check(spec.get("template"), TEMPLATE, "spec.template")
    pod_meta = _check(template.get("metadata"), POD_META, "spec.template.metadata")
    pod_spec = template.get("spec") or {}
    stray = sorted(set(jt.PRUNED_POD_SPEC_FIELDS) & set(pod_spec))
    if stray:
        raise Unsupported(f"spec.template.spec.{', '.join(stray)}: not PodSpec fields (the API server "
                          "drops them); pass the manifest through jobtemplate.as_stored()")
    _check(pod_spec, POD_SPEC, "spec.template.spec")
    if pod_spec.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
        raise Unsupported(f"restartPolicy {pod_spec['restartPolicy']!r} is not valid for a Job")
    if pod_spec.get("automountServiceAccountToken", True) is not False:
        raise Unsupported("automountServiceAccountToken is not false: the replay mounts no API token")
    for i, toleration in enumerate(pod_spec.get("tolerations") or []):
        _check(toleration, TOLERATION, f"tolerations[{i}]")  # the fake node has no taints
    selector = pod_spec.get("nodeSelector") or {}
    missing = {k: v for k, v in selector.items() if node.labels.get(k) != str(v)}
    if missing:
        raise PodRejected(f"nodeSelector {missing} matches no label of node {node.name} "
                          f"({node.labels}): the pod would stay Pending")

    pod_sc = _check(pod_spec.get("securityContext"), POD_SC, "spec.template.spec.securityContext")
    containers = pod_spec.get("containers") or []
    if len(containers) != 1:
        raise Unsupported(f"{len(containers)} containers: the replay runs exactly one")
    c = _check(containers[0], CONTAINER, "containers[0]")
    sc = {**{k: v for k, v in pod_sc.items() if k in CONTAINER_SC},
          **_check(c.get("securityContext"), CONTAINER_SC, "containers[0].securityContext")}

    generate = meta.get("generateName")
    job_name = meta.get("name") or (generate + _suffix() if generate else None)
    if not job_name:
        raise Unsupported("metadata: neither name nor generateName")
    name = container_name or f"{job_name}-{_suffix()}"
    namespace = meta.get("namespace") or "default"
    labels = {**(pod_meta.get("labels") or {}), "batch.kubernetes.io/job-name": job_name, "job-name": job_name}
    pod = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "node": node,
           "serviceAccountName": pod_spec.get("serviceAccountName") or "default",
           "labels": labels, "annotations": pod_meta.get("annotations") or {}}

    image = c.get("image")
    if not image:
        raise Unsupported("containers[0].image is empty")
    pull = {"Never": "never", "IfNotPresent": "missing", "Always": "always"}
    policy = c.get("imagePullPolicy") or ("Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent")
    if policy not in pull:
        raise Unsupported(f"imagePullPolicy {policy!r}")
    argv = ["docker", "run", "--detach", "--name", name, "--network", "host", f"--pull={pull[policy]}"]

    # identity and privileges
    uid = sc.get("runAsUser")
    gid = sc.get("runAsGroup")
    image_user = _image_user(image) if uid is None and (sc.get("runAsNonRoot") or gid is not None) else ""
    if sc.get("runAsNonRoot"):
        effective = uid if uid is not None else image_user.split(":")[0]
        if not str(effective).isdigit():
            raise PodRejected(f"runAsNonRoot with the image's non-numeric user {effective!r}: "
                              "the kubelet cannot verify it (CreateContainerConfigError)")
        if int(effective) == 0:
            raise PodRejected("runAsNonRoot but the container would run as uid 0")
    if uid is not None or gid is not None:
        argv += ["--user", f"{uid if uid is not None else image_user.split(':')[0] or 0}"
                           + (f":{gid}" if gid is not None else "")]
    groups = list(pod_sc.get("supplementalGroups") or [])
    if pod_sc.get("fsGroup") is not None:
        groups.append(pod_sc["fsGroup"])
    for g in groups:
        argv += ["--group-add", str(g)]
    if sc.get("privileged"):
        argv.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    caps = _check(sc.get("capabilities"), {"add", "drop"}, "securityContext.capabilities")
    for cap in caps.get("drop") or []:
        argv += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        argv += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    seccomp = _check(sc.get("seccompProfile"), {"type", "localhostProfile"}, "securityContext.seccompProfile")
    kind = seccomp.get("type", "Unconfined")
    if kind == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    elif kind != "RuntimeDefault":
        raise Unsupported(f"seccompProfile type {kind!r}")

    # compute
    resources = _check(c.get("resources"), RESOURCES, "containers[0].resources")
    for kind_ in RESOURCES:
        _check(resources.get(kind_), RESOURCE_NAMES, f"resources.{kind_}")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for res in RESOURCE_NAMES:
        if res in requests and res in limits and quantity(requests[res]) > quantity(limits[res]):
            raise PodRejected(f"resources.requests.{res} {requests[res]} > limits {limits[res]} (API server rejects)")
    if quantity(requests.get("cpu", 0)) > node.cpus or quantity(requests.get("memory", 0)) > node.memory:
        raise PodRejected(f"requests {requests} exceed node {node.name} ({node.cpus} CPUs, "
                          f"{node.memory / 2**30:.1f} GiB): the pod would stay Pending")
    if "memory" in limits:
        mem = str(int(quantity(limits["memory"])))
        argv += ["--memory", mem, "--memory-swap", mem]
    if "cpu" in limits:
        argv += ["--cpus", f"{min(quantity(limits['cpu']), node.cpus):g}"]

    # volumes: an emptyDir is a fresh 0777 directory on the node (group fsGroup, setgid), bind-mounted
    root = Path(volume_root) if volume_root else Path(tempfile.mkdtemp(prefix="replay-pod-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    volumes: dict[str, dict] = {}
    for i, vol in enumerate(pod_spec.get("volumes") or []):
        _check(vol, VOLUME, f"volumes[{i}]")
        if "emptyDir" not in vol:
            raise Unsupported(f"volumes[{i}] ({vol.get('name')}): only emptyDir volumes are honoured")
        empty = _check(vol["emptyDir"], EMPTY_DIR, f"volumes[{i}].emptyDir")
        if empty.get("medium") not in (None, ""):
            raise Unsupported(f"volumes[{i}].emptyDir.medium {empty['medium']!r}: only disk-backed emptyDirs")
        volumes[vol["name"]] = empty
    empty_dirs: dict[str, tuple[Path, Optional[float]]] = {}
    for i, mount in enumerate(c.get("volumeMounts") or []):
        _check(mount, MOUNT, f"volumeMounts[{i}]")
        if mount["name"] not in volumes:
            raise PodRejected(f"volumeMounts[{i}]: no volume {mount['name']!r}")
        if mount["name"] not in empty_dirs:
            host = root / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            limit = volumes[mount["name"]].get("sizeLimit")
            empty_dirs[mount["name"]] = (host, quantity(limit) if limit else None)
            _empty_dir_permissions(host, pod_sc.get("fsGroup"))
        host = empty_dirs[mount["name"]][0]
        argv += ["--mount", f"type=bind,source={host},destination={mount['mountPath']}"
                            + (",readonly" if mount.get("readOnly") else "")]

    # process
    env = resolve_env(c, pod, secrets or {}, config_maps or {}, {"HOSTNAME": name, **(extra_env or {})})
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if c.get("workingDir"):
        argv += ["--workdir", c["workingDir"]]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--label", f"io.kubernetes.pod.namespace={namespace}"]
    grace = int(pod_spec.get("terminationGracePeriodSeconds", 30))
    argv += ["--stop-timeout", str(grace)]
    command = [expand(str(a), env) for a in c.get("command") or []]
    args = [expand(str(a), env) for a in c.get("args") or []]
    if command:
        argv += ["--entrypoint", command[0], image, *command[1:], *args]
    else:
        argv += [image, *args]
    deadline = spec.get("activeDeadlineSeconds")
    return Pod(job_name=job_name, name=name, namespace=namespace, argv=argv, env=env, labels=labels,
               deadline=float(deadline) if deadline else None,
               backoff_limit=int(spec.get("backoffLimit", 6)), grace=grace, image=image,
               user=None if uid is None else str(uid), empty_dirs=empty_dirs)


def docker_run_args(job_manifest: dict, secrets: Mapping[str, Mapping[str, str]] | None = None,
                    extra_env: Mapping[str, str] | None = None, **kwargs: Any) -> list[str]:
    """`docker run` argv (detached) for the Job's pod; see `plan_pod` for the keyword arguments.

    The pod's emptyDirs are created under `volume_root` (default: a new temporary directory,
    which the caller removes)."""
    return plan_pod(job_manifest, secrets, extra_env, **kwargs).argv


# -- running a Job ---------------------------------------------------------------------------


@dataclass
class Attempt:
    pod: str
    exit_code: int
    oom_killed: bool
    started_at: str  # the container's StartedAt (RFC 3339, UTC)
    finished_at: str
    logs: str
    submitted: float  # time.time() when `docker run` was called


@dataclass
class JobResult:
    name: str
    succeeded: bool
    reason: str  # Complete, BackoffLimitExceeded, DeadlineExceeded
    attempts: list[Attempt]

    @property
    def logs(self) -> str:
        return "\n".join(a.logs for a in self.attempts)


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def _usage(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(folder, f)).st_size
            except OSError:
                pass
    return total


def _remove_volumes(pod: Pod, root: Path) -> None:
    """Delete the pod's emptyDirs; files the pod's user wrote are removed as that user when
    this process may not (an unprivileged CI runner)."""
    shutil.rmtree(root, ignore_errors=True)
    if root.exists() and pod.user is not None:
        _docker("run", "--rm", "--network", "none", "--user", pod.user, "--entrypoint", "find",
                "--mount", f"type=bind,source={root},destination=/v", pod.image,
                "/v", "-mindepth", "2", "-delete", check=False)
        shutil.rmtree(root, ignore_errors=True)


def run_job(job_manifest: dict, secrets: Mapping[str, Mapping[str, str]] | None = None,
            extra_env: Mapping[str, str] | None = None, *, on_start: Optional[Callable[[str], None]] = None,
            **kwargs: Any) -> JobResult:
    """Run the Job's pod to the end (retrying failed pods up to backoffLimit, stopping it at
    activeDeadlineSeconds, failing it when an emptyDir outgrew its sizeLimit, as an eviction
    would) and return how it ended, with each pod's logs."""
    began = time.monotonic()
    attempts: list[Attempt] = []
    job_name = None
    for _ in range(int((job_manifest.get("spec") or {}).get("backoffLimit", 6)) + 1):
        root = Path(tempfile.mkdtemp(prefix="replay-pod-"))
        pod = None
        reason = None
        try:
            # Later pods of the same Job keep its name (a bad manifest raises here, before any run).
            pod = plan_pod(job_manifest, secrets, extra_env, volume_root=root, **kwargs,
                           **({"container_name": f"{job_name}-{_suffix()}"} if job_name else {}))
            job_name = job_name or pod.job_name
            submitted = time.time()
            cid = _docker(*pod.argv[1:], timeout=300).stdout.strip()
            if on_start:
                on_start(pod.name)
            try:
                left = None if pod.deadline is None else max(1.0, pod.deadline - (time.monotonic() - began))
                try:
                    _docker("wait", cid, timeout=left if left is not None else 24 * 3600)
                except subprocess.TimeoutExpired:
                    _docker("stop", "-t", str(pod.grace), cid, timeout=pod.grace + 60, check=False)
                    reason = "DeadlineExceeded"
                state = json.loads(_docker("inspect", "-f", "{{json .State}}", cid).stdout)
                out = _docker("logs", cid, timeout=120)
                logs = out.stdout + out.stderr
            finally:
                _docker("rm", "-f", cid, check=False)
            for volume, (host, limit) in pod.empty_dirs.items():
                used = _usage(host)
                if limit is not None and used > limit and not reason:
                    reason = "Evicted"
                    logs += f"\n[replay] emptyDir {volume} used {used} bytes > sizeLimit {int(limit)}"
        finally:
            if pod is not None:
                _remove_volumes(pod, root)
            else:
                shutil.rmtree(root, ignore_errors=True)
        attempts.append(Attempt(pod=pod.name, exit_code=state["ExitCode"], oom_killed=state["OOMKilled"],
                                started_at=state["StartedAt"], finished_at=state["FinishedAt"], logs=logs,
                                submitted=submitted))
        if reason == "DeadlineExceeded":
            return JobResult(job_name, False, reason, attempts)
        if state["ExitCode"] == 0 and not reason:
            return JobResult(job_name, True, "Complete", attempts)
    return JobResult(job_name or "", False, "BackoffLimitExceeded", attempts)


# -- the worker ------------------------------------------------------------------------------


@dataclass
class Launch:
    """One flow run the replay worker started as a Job."""

    flow_run_id: Any
    flow_run_name: str
    deployment: str
    manifest: dict
    started: float  # time.monotonic()
    ended: Optional[float] = None
    result: Optional[JobResult] = None
    error: Optional[BaseException] = None


class Worker:
    """The prefect-kubernetes worker's part, with `run_job` in place of the Kubernetes API.

    Polls the work pool for scheduled runs (the server applies the pool's concurrency limit),
    proposes Pending, renders each run's Job with prefect-kubernetes' own job configuration
    from the pool's stored base job template, and runs it in a thread. A run whose pod ended
    without a final state is marked Crashed, as the worker's Job observer does.
    """

    def __init__(self, pool: str, secrets: Mapping[str, Mapping[str, str]], *, node: Optional[Node] = None,
                 extra_env: Mapping[str, str] | None = None, name: str = "replay-worker", poll: float = 1.0):
        self.pool, self.secrets, self.node, self.extra_env = pool, secrets, node, extra_env or {}
        self.name, self.poll = name, poll
        self.launches: list[Launch] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._poller = threading.Thread(target=self._loop, name=f"{name}-poll", daemon=True)

    def __enter__(self) -> "Worker":
        self._poller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self, timeout: float = 120) -> None:
        self._stop.set()
        self._poller.join(timeout)
        for t in list(self._threads):
            t.join(timeout)
        for launch in self.launches:
            if launch.ended is None:  # still running: remove its container
                _docker("rm", "-f", *self._containers(launch), check=False)

    def _containers(self, launch: Launch) -> list[str]:
        out = _docker("ps", "-aq", "--filter", f"label=prefect.io/flow-run-id={launch.flow_run_id}", check=False)
        return out.stdout.split() or ["--"]

    def _loop(self) -> None:
        from prefect.client.orchestration import get_client

        while not self._stop.is_set():
            try:
                with get_client(sync_client=True) as client:
                    for response in client.get_scheduled_flow_runs_for_work_pool(self.pool):
                        self._submit(client, response.flow_run)
            except Exception as exc:  # noqa: BLE001 - reported by the test through .errors
                self.errors.append(exc)
            self._stop.wait(self.poll)

    def _submit(self, client: Any, flow_run: Any) -> None:
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        if client.set_flow_run_state(flow_run.id, Pending()).status != SetStateStatus.ACCEPT:
            return  # someone else took it (or it was cancelled)
        deployment = client.read_deployment(flow_run.deployment_id)
        flow = client.read_flow(flow_run.flow_id)
        pool = client.read_work_pool(self.pool)
        manifest = jt.as_stored(jt.job_manifest_for_flow_run(
            pool.base_job_template, flow_run, deployment, flow, work_pool=pool, worker_name=self.name))
        launch = Launch(flow_run.id, flow_run.name, f"{flow.name}/{deployment.name}", manifest, time.monotonic())
        with self._lock:
            self.launches.append(launch)
        thread = threading.Thread(target=self._run, args=(launch,), name=f"job-{flow_run.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, launch: Launch) -> None:
        try:
            launch.result = run_job(launch.manifest, self.secrets, self.extra_env, node=self.node)
            if not launch.result.succeeded:
                self._crash_if_not_final(launch)
        except BaseException as exc:  # noqa: BLE001
            launch.error = exc
            self.errors.append(exc)
            self._crash_if_not_final(launch)
        finally:
            launch.ended = time.monotonic()

    def _crash_if_not_final(self, launch: Launch) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(launch.flow_run_id).state
            if state is None or not state.is_final():
                why = launch.result.reason if launch.result else repr(launch.error)
                client.set_flow_run_state(launch.flow_run_id, Crashed(message=f"Job ended: {why}"), force=True)

    def max_concurrent(self, launches: Optional[Iterable[Launch]] = None) -> int:
        """Most containers of `launches` (default: all) that ran at the same time, from the
        containers' own start and finish times."""
        events = []
        for launch in launches if launches is not None else self.launches:
            for attempt in launch.result.attempts if launch.result else []:
                events += [(timestamp(attempt.started_at), 1), (timestamp(attempt.finished_at), -1)]
        running = peak = 0
        for _, step in sorted(events):  # at a tie, an end (-1) sorts before a start
            running += step
            peak = max(peak, running)
        return peak


def timestamp(docker_time: str) -> float:
    """Seconds since the epoch of a Docker RFC 3339 time (nanoseconds cut to microseconds)."""
    from datetime import datetime

    main, _, frac = docker_time.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{main}.{(frac + '000000')[:6]}+00:00").timestamp()
