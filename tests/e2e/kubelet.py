"""The cluster side of the API stand-in: the Job controller and the kubelet, in one loop.

Watches the stand-in for Jobs, creates each Job's pod object (labels `job-name`,
`controller-uid`, owner reference), runs the pod with `docker run` (replay.py), and writes
what a cluster writes: pod phase and container states, Job `active`/`succeeded`/`failed`,
conditions and times, the container's log (for pods/log). A failed pod is retried up to the
Job's backoffLimit; a deleted Job has its container stopped and its pods deleted, as the
garbage collector does after a foreground deletion.

    with Kubelet(api, "echoflow", node) as kubelet:
        ...
        kubelet.pods       # every pod it ran: job, name, exit code, logs
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import replay
from kube_api import ApiServer, now

POLL = 0.5  # seconds between the Job controller's looks at the API


@dataclass
class RanPod:
    job: str
    flow_run_id: str
    name: str
    exit_code: Optional[int] = None
    reason: str = ""
    logs: str = ""
    started: float = field(default_factory=time.time)
    ended: Optional[float] = None


class Kubelet:
    def __init__(self, api: ApiServer, namespace: str, node: replay.Node):
        self.api, self.namespace, self.node = api, namespace, node
        self.http = httpx.Client(base_url=api.urls["kubelet"], timeout=30)
        self.pods: list[RanPod] = []
        # Flow runs whose container is killed (SIGKILL, exit 137, as a node's OOM killer
        # would) once its log shows a given text.
        self.kill_on_log: dict[str, str] = {}
        self.errors: list[BaseException] = []
        self._seen: set[str] = set()
        self._containers: set[str] = set()  # started and not yet removed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._watch, name="kubelet", daemon=True)

    def __enter__(self) -> "Kubelet":
        self._loop.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._loop.join(30)
        # Pods still running (a test failed or timed out): the node goes away with them.
        if self._containers:
            replay.docker("rm", "-f", *self._containers, check=False)
        for thread in self._threads:
            thread.join(60)
        self.http.close()

    # -- API helpers --------------------------------------------------------------------

    def _path(self, kind: str, name: str = "") -> str:
        base = "/apis/batch/v1" if kind == "jobs" else "/api/v1"
        return f"{base}/namespaces/{self.namespace}/{kind}" + (f"/{name}" if name else "")

    def _patch_status(self, kind: str, name: str, status: dict) -> None:
        self.http.patch(
            self._path(kind, name) + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()

    def _job_exists(self, uid: str, name: str) -> bool:
        response = self.http.get(self._path("jobs", name))
        return response.status_code == 200 and response.json()["metadata"]["uid"] == uid

    def _secrets(self) -> dict[str, dict[str, str]]:
        items = self.http.get(self._path("secrets")).raise_for_status().json()["items"]
        return {
            s["metadata"]["name"]: {
                **{k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()},
                **(s.get("stringData") or {}),
            }
            for s in items
        }

    # -- the Job controller -------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self.http.get(self._path("jobs")).raise_for_status().json()["items"]:
                    uid = job["metadata"]["uid"]
                    if uid not in self._seen and not (job.get("status") or {}).get("conditions"):
                        self._seen.add(uid)
                        thread = threading.Thread(
                            target=self._run_job, args=(job,), daemon=True, name=f"job-{job['metadata']['name']}"
                        )
                        self._threads.append(thread)
                        thread.start()
            except Exception as exc:  # noqa: BLE001 - reported by the test through .errors
                self.errors.append(exc)
            self._stop.wait(POLL)

    def _run_job(self, job: dict) -> None:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        backoff_limit = int(job["spec"].get("backoffLimit", 6))
        self._patch_status("jobs", name, {"startTime": now(), "active": 1})
        failed = 0
        try:
            while True:
                pod = self._run_pod(job)
                if pod is None:  # the Job was deleted
                    return
                if pod.exit_code == 0 and not pod.reason.startswith("Deadline"):
                    self._patch_status(
                        "jobs",
                        name,
                        {
                            "active": 0,
                            "succeeded": 1,
                            "ready": 0,
                            "completionTime": now(),
                            "conditions": [
                                _condition("SuccessCriteriaMet", "CompletionsReached"),
                                _condition("Complete", "CompletionsReached"),
                            ],
                        },
                    )
                    return
                failed += 1
                if failed > backoff_limit or pod.reason == "DeadlineExceeded":
                    reason = pod.reason if pod.reason == "DeadlineExceeded" else "BackoffLimitExceeded"
                    self._patch_status(
                        "jobs",
                        name,
                        {
                            "active": 0,
                            "failed": failed,
                            "ready": 0,
                            "conditions": [_condition("FailureTarget", reason), _condition("Failed", reason)],
                        },
                    )
                    return
                self._patch_status("jobs", name, {"active": 1, "failed": failed})
        except Exception as exc:  # noqa: BLE001
            self.errors.append(exc)
        finally:
            if not self._job_exists(uid, name):
                self._delete_pods(name)

    def _delete_pods(self, job_name: str) -> None:
        listed = self.http.get(self._path("pods"), params={"labelSelector": f"job-name={job_name}"}).json()
        for pod in listed.get("items", []):
            self.http.delete(self._path("pods", pod["metadata"]["name"]))

    # -- the kubelet ----------------------------------------------------------------------

    def _run_pod(self, job: dict) -> Optional[RanPod]:
        """Run one pod of the Job to its end; None when the Job was deleted meanwhile."""
        job_name, job_uid = job["metadata"]["name"], job["metadata"]["uid"]
        root = Path(tempfile.mkdtemp(prefix="kubelet-pod-"))
        stored = {k: v for k, v in job.items() if k != "status"}
        planned = replay.plan_pod(stored, self._secrets(), node=self.node, volume_root=root)
        pod_obj = _pod_object(job, planned, self.node.name)
        self.http.post(self._path("pods"), json=pod_obj).raise_for_status()
        ran = RanPod(job=job_name, flow_run_id=planned.labels.get("prefect.io/flow-run-id", ""), name=planned.name)
        self.pods.append(ran)
        container = replay.start(planned)
        self._containers.add(container)
        state = {
            **replay.container_state(container),
            "Image": replay.docker("inspect", "-f", "{{.Image}}", container).stdout.strip(),
        }
        self._patch_status(
            "pods",
            planned.name,
            {
                "phase": "Running",
                "startTime": now(),
                "podIP": "127.0.0.1",
                "hostIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [_container_status(planned, container, state, None)],
            },
        )
        waiter = subprocess.Popen(["docker", "wait", container], stdout=subprocess.DEVNULL)
        began, deleted = time.monotonic(), False
        try:
            while waiter.poll() is None:
                if not self._job_exists(job_uid, job_name):
                    deleted = True
                    break
                if planned.deadline is not None and time.monotonic() - began > planned.deadline:
                    ran.reason = "DeadlineExceeded"
                    break
                marker = self.kill_on_log.get(ran.flow_run_id)
                if marker and marker in replay.container_logs(container):
                    replay.docker("kill", "--signal", "KILL", container, check=False)
                time.sleep(0.2 if marker else 1.0)
            if waiter.poll() is None:  # deleted or past its deadline: stop it as the kubelet does
                replay.docker("stop", "-t", str(planned.grace), container, check=False, timeout=planned.grace + 60)
                waiter.wait(60)
            state = {**replay.container_state(container), "Image": state["Image"]}
            ran.logs = replay.container_logs(container)
        finally:
            replay.docker("rm", "-f", container, check=False)
            self._containers.discard(container)
            replay.remove_volumes(planned, root)
        self.api.emulator.logs[(self.namespace, planned.name)] = ran.logs
        ran.exit_code, ran.ended = state["ExitCode"], time.time()
        evicted = replay.evicted(planned)
        if evicted:
            ran.reason, ran.logs = "Evicted", ran.logs + evicted
        ran.reason = ran.reason or (
            "OOMKilled" if state["OOMKilled"] else "Completed" if ran.exit_code == 0 else "Error"
        )
        if deleted:
            return None
        self._patch_status(
            "pods",
            planned.name,
            {
                "phase": "Succeeded" if ran.exit_code == 0 and ran.reason == "Completed" else "Failed",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [_container_status(planned, container, state, ran)],
            },
        )
        return ran


def _container_status(planned: replay.Pod, container: str, state: dict, ended: Optional[RanPod]) -> dict:
    """A containerStatuses entry (every field kubernetes_asyncio's V1ContainerStatus requires)."""
    started = state["StartedAt"][:19] + "Z"
    current = (
        {"running": {"startedAt": started}}
        if ended is None
        else {
            "terminated": {
                "exitCode": ended.exit_code,
                "reason": ended.reason,
                "startedAt": started,
                "finishedAt": state["FinishedAt"][:19] + "Z",
            }
        }
    )
    return {
        "name": planned.container,
        "image": planned.image,
        "imageID": f"docker://{state['Image']}",
        "containerID": f"docker://{container}",
        "ready": ended is None,
        "restartCount": 0,
        "started": ended is None,
        "state": current,
    }


def _condition(kind: str, reason: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": now(), "lastProbeTime": now()}


def _pod_object(job: dict, planned: replay.Pod, node: str) -> dict:
    """The pod the Job controller creates from the Job's template."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    labels = {
        **planned.labels,
        "job-name": meta["name"],
        "controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "batch.kubernetes.io/controller-uid": meta["uid"],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": planned.name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": (template.get("metadata") or {}).get("annotations") or {},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {**template["spec"], "nodeName": node},
        "status": {"phase": "Pending"},
    }
