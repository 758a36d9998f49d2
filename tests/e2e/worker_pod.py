"""The chart's worker Deployment, run as a container of the image with `docker run`.

Its command line, environment (fieldRef and secretKeyRef resolved from the rendered chart),
security context and volumes are the rendered Deployment's; three things differ, because
this is not a cluster: PREFECT_API_URL is the loopback Prefect server instead of the
in-cluster Service, the health port is a free port (the network is the host's), and
KUBECONFIG points at the API stand-in instead of the mounted ServiceAccount token.

    worker = WorkerPod.from_chart(objects, image, api_url=..., kubeconfig=..., workdir=...)
    worker.start(); worker.wait_healthy(); ...; worker.stop()
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import httpx
from e2e_docker import docker
from podspec import Node, resolve_env

KUBECONFIG_PATH = "/etc/echoflow/kubeconfig"
_names = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chart_data(objects: list[dict], kind: str) -> dict[str, dict[str, str]]:
    """{name: data} of the rendered chart's Secrets or ConfigMaps (as the cluster stores them)."""
    import base64

    found = {}
    for obj in objects:
        if obj and obj.get("kind") == kind:
            data = (
                {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                if kind == "Secret"
                else dict(obj.get("data") or {})
            )
            found[obj["metadata"]["name"]] = {**data, **(obj.get("stringData") or {})}
    return found


@dataclass
class WorkerPod:
    container: dict  # the Deployment's worker container
    pod_spec: dict
    image: str
    overrides: dict[str, str]  # env replaced or added for loopback
    secrets: dict[str, dict[str, str]]
    config_maps: dict[str, dict[str, str]]
    workdir: Path
    drop_env: tuple[str, ...] = ()
    name: str = ""
    port: int = 0
    names: list[str] = field(default_factory=list)  # every pod name it ran under

    @classmethod
    def from_chart(
        cls,
        objects: list[dict],
        image: str,
        *,
        api_url: str,
        kubeconfig: Path,
        workdir: Path,
        drop_env: tuple[str, ...] = (),
    ) -> "WorkerPod":
        deployments = [
            o
            for o in objects
            if o
            and o["kind"] == "Deployment"
            and any(c["name"] == "worker" for c in o["spec"]["template"]["spec"]["containers"])
        ]
        if len(deployments) != 1:
            raise LookupError(f"expected one worker Deployment in the rendered chart, found {len(deployments)}")
        pod_spec = deployments[0]["spec"]["template"]["spec"]
        container = next(c for c in pod_spec["containers"] if c["name"] == "worker")
        (workdir / "kubeconfig").write_bytes(kubeconfig.read_bytes())
        return cls(
            container,
            pod_spec,
            image,
            {"PREFECT_API_URL": api_url, "KUBECONFIG": KUBECONFIG_PATH},
            chart_data(objects, "Secret"),
            chart_data(objects, "ConfigMap"),
            workdir,
            drop_env,
        )

    def _mounts(self) -> list[str]:
        volumes = {v["name"]: v for v in self.pod_spec.get("volumes") or []}
        uid = self.container.get("securityContext", {}).get("runAsUser", 1000)
        argv = ["--mount", f"type=bind,source={self.workdir / 'kubeconfig'},destination={KUBECONFIG_PATH},readonly"]
        for mount in self.container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                argv += ["--tmpfs", f"{mount['mountPath']}:uid={uid},gid={uid},mode=0755"]
            elif "configMap" in volume:
                data = self.config_maps[volume["configMap"]["name"]]
                folder = self.workdir / volume["configMap"]["name"]
                folder.mkdir(exist_ok=True)
                for key, value in data.items():
                    (folder / key).write_text(value)
                    (folder / key).chmod(0o644)
                source = folder / mount["subPath"] if mount.get("subPath") else folder
                argv += ["--mount", f"type=bind,source={source},destination={mount['mountPath']},readonly"]
            else:
                raise ValueError(f"worker volume {mount['name']}: only emptyDir and configMap are modelled")
        return argv

    def _security(self) -> list[str]:
        sc = {
            **{
                k: v
                for k, v in (self.pod_spec.get("securityContext") or {}).items()
                if k in ("runAsUser", "runAsGroup")
            },
            **(self.container.get("securityContext") or {}),
        }
        argv = ["--user", f"{sc.get('runAsUser', 1000)}:{sc.get('runAsGroup', 1000)}"]
        if sc.get("readOnlyRootFilesystem"):
            argv.append("--read-only")
        for cap in (sc.get("capabilities") or {}).get("drop") or []:
            argv += ["--cap-drop", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        return argv

    def start(self) -> str:
        """Start a new pod of the Deployment (a new name, as after a rollout or a crash)."""
        self.name = f"echoflow-worker-e2e{next(_names)}-{int(time.time()) % 100000}"
        self.names.append(self.name)
        self.port = free_port()
        pod = {
            "name": self.name,
            "namespace": "echoflow",
            "uid": self.name,
            "node": Node(),
            "serviceAccountName": self.pod_spec.get("serviceAccountName", "default"),
            "labels": {},
            "annotations": {},
        }
        env = resolve_env(self.container, pod, self.secrets, self.config_maps, {})
        env.update(self.overrides, PREFECT_WORKER_WEBSERVER_PORT=str(self.port))
        for name in self.drop_env:
            env.pop(name, None)
        argv = ["run", "--detach", "--name", self.name, "--network", "host", *self._security(), *self._mounts()]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        command = [c.replace("$(POD_NAME)", self.name) for c in self.container["command"]]
        docker(*argv, "--entrypoint", command[0], self.image, *command[1:], *self.container.get("args", []))
        return self.name

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until the worker's health endpoint (the chart's startupProbe) answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            state = json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)
            if not state["Running"]:
                raise RuntimeError(f"worker exited {state['ExitCode']}:\n{self.logs()[-4000:]}")
            time.sleep(1)
        raise RuntimeError(f"worker not healthy in {timeout}s:\n{self.logs()[-4000:]}")

    def logs(self, name: Optional[str] = None) -> str:
        out = docker("logs", name or self.name, check=False)
        return out.stdout + out.stderr

    def stop(self, grace: int = 20) -> str:
        """Stop the pod as Kubernetes does (SIGTERM, then SIGKILL after the grace period); its log."""
        docker("stop", "-t", str(grace), self.name, check=False, timeout=grace + 60)
        logs = self.logs()
        docker("rm", "-f", self.name, check=False)
        return logs


def secret_objects(secrets: Mapping[str, Mapping[str, str]]) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "stringData": dict(data)}
        for name, data in secrets.items()
    ]
