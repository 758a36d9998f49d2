"""Run one pod of a stored Kubernetes Job with `docker run`, as a kubelet would.

The Job is the one the prefect-kubernetes worker created through the API stand-in
(kube_api.py); kubelet.py calls `plan_pod` and `start` for each pod and writes its status
back. Fields are checked and resolved by podspec.py (unknown ones raise `Unsupported`).

How the pod spec maps onto `docker run`:
  image / imagePullPolicy       image, --pull never|missing|always
  command / args                --entrypoint + arguments; $(VAR) expanded as Kubernetes does
  env / envFrom                 --env, resolved by podspec.resolve_env
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
  resources.limits              --memory (= --memory-swap: no swap), --cpus (capped at the node's CPUs)
  resources.requests            must fit the node (else the pod would stay Pending) and the limits
  nodeSelector / tolerations    checked against the `Node` (its labels; it has no taints)
  automountServiceAccountToken  must be false (no API token is mounted here)
  activeDeadlineSeconds         Pod.deadline (the kubelet side stops the pod)
  terminationGracePeriodSeconds --stop-timeout, Pod.grace
  metadata labels               --label
Networking is `--network host`: the Prefect API and S3 are loopback addresses of the host
(the pod's HOSTNAME is set to the pod name, as --hostname cannot be used with it).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from e2e_docker import REPO, docker
from podspec import (  # noqa: F401
    CONTAINER,
    CONTAINER_SC,
    EMPTY_DIR,
    JOB,
    JOB_META,
    JOB_SPEC,
    MOUNT,
    POD_META,
    POD_SC,
    POD_SPEC,
    RESOURCE_NAMES,
    RESOURCES,
    TEMPLATE,
    TOLERATION,
    VOLUME,
    Node,
    PodRejected,
    Unsupported,
    _check,
    expand,
    generated_suffix,
    kind_worker_node,
    quantity,
    resolve_env,
)

sys.path.insert(0, str(REPO / "tests" / "chart"))
import jobtemplate as jt  # noqa: E402


@dataclass
class Pod:
    """What the replay decided to run for one pod of a Job (the docker argv and its context)."""

    job_name: str
    name: str
    container: str  # the container's name
    namespace: str
    argv: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    deadline: Optional[float]
    grace: int
    image: str
    user: Optional[str]
    empty_dirs: dict[str, tuple[Path, Optional[float]]]  # volume name -> (host dir, sizeLimit bytes)
    storage_limit: Optional[float] = None  # resources.limits.ephemeral-storage, bytes


def _image_user(image: str) -> str:
    out = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Config.User}}", image], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise PodRejected(
            f"image {image!r} not found locally ({out.stderr.strip()}): "
            "with imagePullPolicy Never the pod fails with ErrImageNeverPull"
        )
    return out.stdout.strip()


def _checked(job: dict, node: Node) -> tuple[dict, dict, dict, dict, dict, dict]:
    """The Job's parts, each checked: (metadata, spec, pod metadata, pod spec, container,
    effective container securityContext)."""
    _check(job, JOB, "Job")
    if (job.get("apiVersion"), job.get("kind")) != ("batch/v1", "Job"):
        raise Unsupported(f"not a batch/v1 Job: {job.get('apiVersion')} {job.get('kind')}")
    meta = _check(job.get("metadata"), JOB_META | {"uid", "creationTimestamp", "resourceVersion"}, "metadata")
    spec = _check(job.get("spec"), JOB_SPEC, "spec")
    for key in ("parallelism", "completions"):
        if spec.get(key, 1) != 1:
            raise Unsupported(f"spec.{key}={spec[key]}: the replay runs one pod at a time")
    template = _check(spec.get("template"), TEMPLATE, "spec.template")
    pod_meta = _check(template.get("metadata"), POD_META, "spec.template.metadata")
    pod_spec = template.get("spec") or {}
    stray = sorted(set(jt.PRUNED_POD_SPEC_FIELDS) & set(pod_spec))
    if stray:
        raise Unsupported(
            f"spec.template.spec.{', '.join(stray)}: not PodSpec fields (the API server "
            "drops them); pass the manifest through jobtemplate.as_stored()"
        )
    _check(pod_spec, POD_SPEC, "spec.template.spec")
    if pod_spec.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
        raise Unsupported(f"restartPolicy {pod_spec['restartPolicy']!r} is not valid for a Job")
    if pod_spec.get("automountServiceAccountToken", True) is not False:
        raise Unsupported("automountServiceAccountToken is not false: the replay mounts no API token")
    for i, toleration in enumerate(pod_spec.get("tolerations") or []):
        _check(toleration, TOLERATION, f"tolerations[{i}]")  # the node has no taints
    missing = {k: v for k, v in (pod_spec.get("nodeSelector") or {}).items() if node.labels.get(k) != str(v)}
    if missing:
        raise PodRejected(
            f"nodeSelector {missing} matches no label of node {node.name} ({node.labels}): the pod would stay Pending"
        )
    pod_sc = _check(pod_spec.get("securityContext"), POD_SC, "spec.template.spec.securityContext")
    containers = pod_spec.get("containers") or []
    if len(containers) != 1:
        raise Unsupported(f"{len(containers)} containers: the replay runs exactly one")
    c = _check(containers[0], CONTAINER, "containers[0]")
    sc = {
        **{k: v for k, v in pod_sc.items() if k in CONTAINER_SC},
        **_check(c.get("securityContext"), CONTAINER_SC, "containers[0].securityContext"),
    }
    return meta, spec, pod_meta, pod_spec, c, sc


def _security_args(sc: dict, pod_sc: dict, image: str) -> tuple[list[str], Optional[int]]:
    """--user/--group-add/privilege flags, and the uid the container runs as (if set)."""
    argv: list[str] = []
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    image_user = _image_user(image) if uid is None and (sc.get("runAsNonRoot") or gid is not None) else ""
    if sc.get("runAsNonRoot"):
        effective = uid if uid is not None else image_user.split(":")[0]
        if not str(effective).isdigit():
            raise PodRejected(
                f"runAsNonRoot with the image's non-numeric user {effective!r}: "
                "the kubelet cannot verify it (CreateContainerConfigError)"
            )
        if int(effective) == 0:
            raise PodRejected("runAsNonRoot but the container would run as uid 0")
    if uid is not None or gid is not None:
        argv += [
            "--user",
            f"{uid if uid is not None else image_user.split(':')[0] or 0}" + (f":{gid}" if gid is not None else ""),
        ]
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
    return argv, uid


def _resource_args(c: dict, node: Node) -> list[str]:
    """--memory/--cpus; the ephemeral-storage limit is checked by `evicted` (emptyDir usage:
    the root filesystem is read-only)."""
    resources = _check(c.get("resources"), RESOURCES, "containers[0].resources")
    for kind in RESOURCES:
        _check(resources.get(kind), RESOURCE_NAMES, f"resources.{kind}")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for res in RESOURCE_NAMES:
        if res in requests and res in limits and quantity(requests[res]) > quantity(limits[res]):
            raise PodRejected(f"resources.requests.{res} {requests[res]} > limits {limits[res]} (API server rejects)")
    disk = shutil.disk_usage(tempfile.gettempdir()).total
    if (
        quantity(requests.get("cpu", 0)) > node.cpus
        or quantity(requests.get("memory", 0)) > node.memory
        or quantity(requests.get("ephemeral-storage", 0)) > disk
    ):
        raise PodRejected(
            f"requests {requests} exceed node {node.name} ({node.cpus} CPUs, "
            f"{node.memory / 2**30:.1f} GiB): the pod would stay Pending"
        )
    argv: list[str] = []
    if "memory" in limits:
        mem = str(int(quantity(limits["memory"])))
        argv += ["--memory", mem, "--memory-swap", mem]
    if "cpu" in limits:
        argv += ["--cpus", f"{min(quantity(limits['cpu']), node.cpus):g}"]
    return argv


def _volume_args(pod_spec: dict, c: dict, fs_group: Optional[int], root: Path) -> tuple[list[str], dict]:
    """Bind mounts of the pod's emptyDirs: a fresh 0777 directory each (group fsGroup, setgid)."""
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
    argv: list[str] = []
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
            _empty_dir_permissions(host, fs_group)
        host = empty_dirs[mount["name"]][0]
        argv += [
            "--mount",
            f"type=bind,source={host},destination={mount['mountPath']}"
            + (",readonly" if mount.get("readOnly") else ""),
        ]
    return argv, empty_dirs


def _empty_dir_permissions(path: Path, fs_group: Optional[int]) -> None:
    if fs_group is None:
        path.chmod(0o777)
        return
    try:
        os.chown(path, -1, int(fs_group))
    except PermissionError:
        pass  # not root: the dir stays world-writable, which is what matters to the pod
    path.chmod(0o2777)


def plan_pod(
    job_manifest: dict,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    extra_env: Mapping[str, str] | None = None,
    *,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    node: Optional[Node] = None,
    pod_name: Optional[str] = None,
    volume_root: Path,
) -> Pod:
    """Check the Job manifest field by field and turn its pod into a `docker run` argv."""
    job = copy.deepcopy(job_manifest)
    node = node or Node()
    meta, spec, pod_meta, pod_spec, c, sc = _checked(job, node)
    job_name = meta.get("name") or (meta["generateName"] + generated_suffix() if meta.get("generateName") else None)
    if not job_name:
        raise Unsupported("metadata: neither name nor generateName")
    name = pod_name or f"{job_name}-{generated_suffix()}"
    namespace = meta.get("namespace") or "default"
    labels = {**(pod_meta.get("labels") or {}), "batch.kubernetes.io/job-name": job_name, "job-name": job_name}
    pod = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "node": node,
        "serviceAccountName": pod_spec.get("serviceAccountName") or "default",
        "labels": labels,
        "annotations": pod_meta.get("annotations") or {},
    }

    image = c.get("image")
    if not image:
        raise Unsupported("containers[0].image is empty")
    pull = {"Never": "never", "IfNotPresent": "missing", "Always": "always"}
    policy = c.get("imagePullPolicy") or ("Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent")
    if policy not in pull:
        raise Unsupported(f"imagePullPolicy {policy!r}")
    pod_sc = pod_spec.get("securityContext") or {}
    security, uid = _security_args(sc, pod_sc, image)
    mounts, empty_dirs = _volume_args(pod_spec, c, pod_sc.get("fsGroup"), Path(volume_root))
    env = resolve_env(c, pod, secrets or {}, config_maps or {}, {"HOSTNAME": name, **(extra_env or {})})
    grace = int(pod_spec.get("terminationGracePeriodSeconds", 30))
    argv = [
        "docker",
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        f"--pull={pull[policy]}",
        *security,
        *_resource_args(c, node),
        *mounts,
    ]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if c.get("workingDir"):
        argv += ["--workdir", c["workingDir"]]
    for key, value in {**labels, "io.kubernetes.pod.namespace": namespace}.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--stop-timeout", str(grace)]
    command = [expand(str(a), env) for a in c.get("command") or []]
    args = [expand(str(a), env) for a in c.get("args") or []]
    argv += ["--entrypoint", command[0], image, *command[1:], *args] if command else [image, *args]
    deadline = spec.get("activeDeadlineSeconds")
    storage = ((c.get("resources") or {}).get("limits") or {}).get("ephemeral-storage")
    return Pod(
        job_name=job_name,
        name=name,
        container=c["name"],
        namespace=namespace,
        argv=argv,
        env=env,
        labels=labels,
        deadline=float(deadline) if deadline else None,
        grace=grace,
        image=image,
        user=None if uid is None else str(uid),
        empty_dirs=empty_dirs,
        storage_limit=quantity(storage) if storage else None,
    )


def docker_run_args(
    job_manifest: dict,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    extra_env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> list[str]:
    """`docker run` argv (detached) for the Job's pod; see `plan_pod` for the keyword arguments."""
    return plan_pod(job_manifest, secrets, extra_env, **kwargs).argv


# -- running it ------------------------------------------------------------------------------


def start(pod: Pod) -> str:
    """Start the pod's container; its id."""
    return docker(*pod.argv[1:], timeout=300).stdout.strip()


def container_state(container: str) -> dict:
    """Docker's State of the container (Running, ExitCode, OOMKilled, StartedAt, FinishedAt)."""
    return json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)


def container_logs(container: str) -> str:
    out = docker("logs", container, timeout=120)
    return out.stdout + out.stderr


def evicted(pod: Pod) -> str:
    """Why the kubelet would have evicted the pod (an emptyDir above its sizeLimit, all of
    them above the ephemeral-storage limit), or ""."""
    total = 0
    for volume, (host, limit) in pod.empty_dirs.items():
        used = sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(host) for f in files)
        total += used
        if limit is not None and used > limit:
            return f"\n[kubelet] emptyDir {volume} used {used} bytes > sizeLimit {int(limit)}"
    if pod.storage_limit is not None and total > pod.storage_limit:
        return f"\n[kubelet] ephemeral storage used {total} bytes > limit {int(pod.storage_limit)}"
    return ""


def remove_volumes(pod: Pod, root: Path) -> None:
    """Delete the pod's emptyDirs; files the pod's user wrote are removed as that user when
    this process may not (an unprivileged CI runner)."""
    shutil.rmtree(root, ignore_errors=True)
    if root.exists() and pod.user is not None:
        docker(
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            pod.user,
            "--entrypoint",
            "find",
            "--mount",
            f"type=bind,source={root},destination=/v",
            pod.image,
            "/v",
            "-mindepth",
            "2",
            "-delete",
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
