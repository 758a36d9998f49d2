"""A Kubernetes API stand-in on loopback: kmock's KubernetesEmulator with what the
prefect-kubernetes worker, its kopf observer and kubectl need from a real API server,
and an RBAC audit of every request.

    with ApiServer(namespace="echoflow", roles={"worker": rules}) as api:
        api.kubeconfig("worker")          # a kubeconfig file for that identity
        api.calls                         # every request: who, verb, resource, namespace, allowed

What kmock 0.8 does not do and this adds:
  - names from metadata.generateName (kmock answers 500), uid, resourceVersion, creationTimestamp;
    a Job's unknown pod-spec fields pruned and the rest validated against the Job schema;
  - labelSelector on list and watch (kmock ignores it: the worker's observer would see every
    Job, and `job-name=` lookups would find other Jobs' pods); list kind/apiVersion (kubectl);
  - pods/log (kmock would return the pod object): text kept by the kubelet side, tailLines,
    `previous=true` answered 400 as for a container that never restarted;
  - server-side Table output for `kubectl get` (Accept: ...;as=Table), so kubectl prints
    the Job's and pod's status columns;
  - identities by listening port (one per identity), each request checked against its Role rules (verb, apiGroup,
    resource[/subresource], namespace); a denied request is answered 403 as by the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Optional

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import yaml
from e2e_docker import REPO
from kmock._internal import rendering
from kube_tables import table_for
from podspec import generated_suffix
from rbac import Call, allows, rbac_verb

sys.path.insert(0, str(REPO / "tests" / "chart"))
import jobtemplate as jt  # noqa: E402

# Discovery entries for what the worker, the observer, the kubelet side and kubectl touch;
# kopf waits for namespaces and CRDs to be discoverable before it starts any watch.
RESOURCES = {
    "batch/v1/jobs": dict(kind="Job", singular="job", subresources={"status"}),
    "v1/pods": dict(kind="Pod", singular="pod", shortnames={"po"}, subresources={"status", "log"}),
    "v1/secrets": dict(kind="Secret", singular="secret"),
    "v1/events": dict(kind="Event", singular="event", shortnames={"ev"}),
    "v1/namespaces": dict(kind="Namespace", singular="namespace", shortnames={"ns"}, namespaced=False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", singular="customresourcedefinition", shortnames={"crd"}, namespaced=False
    ),
}
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
UNRESTRICTED = None  # an identity without rules (the kubelet side, the kubectl user)


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors (`a`, `!a`, `a=b`, `a==b`, `a!=b`, comma-joined)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise ValueError(f"set-based label selector {term!r} is not modelled")
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    identities: dict[str, Optional[list[dict]]] = attrs.field(factory=dict)  # who -> Role rules
    ports: dict[int, str] = attrs.field(factory=dict)  # listening port -> who
    role_namespace: str = "default"
    calls: list[Call] = attrs.field(factory=list)
    logs: dict[tuple[str, str], str] = attrs.field(factory=dict)  # (namespace, pod) -> text
    _versions: Any = attrs.field(factory=lambda: itertools.count(1))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(verbs=VERBS, **{"namespaced": True, **info})

    def _authorize(self, request: rendering.Request) -> None:
        # Who is calling: each identity has its own port (kubectl sends no bearer token over http).
        port = int(request.headers.get("Host", ":0").rpartition(":")[2] or 0)
        token = self.ports.get(port)
        if token not in self.identities:
            raise kmock.KubernetesError(status=401, reason="Unauthorized", message=f"no identity on port {port}")
        if request.resource is None or not request.resource.plural:
            return  # discovery (/api, /apis, /version, /openapi): every authenticated user may
        rules = self.identities[token]
        group = request.resource.group or ""
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        verb = rbac_verb(request.method.value.upper(), request.name is not None, request.params)
        allowed = rules is UNRESTRICTED or (
            request.namespace == self.role_namespace and allows(rules, verb, group, resource)
        )
        self.calls.append(Call(token, verb, group, resource, request.namespace, request.name, allowed))
        if not allowed:
            where = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
            raise kmock.KubernetesError(
                status=403,
                reason="Forbidden",
                message=f'{resource} is forbidden: User "{token}" cannot {verb} resource "{resource}" '
                f'in API group "{group}" {where}',
            )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._authorize(request)
        if request.resource is not None and request.resource.plural and request.subresource == "log":
            return self._serve_log(request)
        if "fieldSelector" in request.params:
            raise kmock.KubernetesError(
                status=400, reason="BadRequest", message="fieldSelector is not modelled by this API stand-in"
            )
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            self._admit(request, data)
        elif request.action == kmock.action.UPDATE and data is not None:
            data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        if request.action == kmock.action.LIST and "as=Table" in request.headers.get("Accept", ""):
            return aiohttp.web.json_response(table_for(request.resource.plural, await self._listed(request)))
        return await super()._handle(request)

    def _admit(self, request: rendering.Request, data: dict) -> None:
        """What the API server fills in on create (kmock answers generateName with a 500)."""
        meta = data.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value")
            meta["name"] = meta["generateName"] + generated_suffix()
        meta.setdefault("namespace", request.namespace)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=str(next(self._versions)))
        info = self.resources[request.resource]
        data.setdefault("kind", info.kind)
        group = request.resource.group
        data.setdefault("apiVersion", f"{group}/{request.resource.version}" if group else request.resource.version)
        data.setdefault("status", {})
        if request.resource.plural == "jobs":
            # Pruned as unknown fields (Prefect's template has them in the pod spec), then the
            # rest checked against the Job schema, as the API server does.
            data.update(jt.as_stored(data))
            errors = jt.validation_errors({k: v for k, v in data.items() if k != "status"}, ("1.35",))
            if errors:
                raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors))

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        listing = await super()._serve_version(request)
        if request.resource.group == "":  # kmock says "/v1": kubectl then finds no core resources
            listing["groupVersion"] = request.resource.version
        return listing

    async def _listed(self, request: rendering.Request) -> list[dict]:
        listed = await super()._serve_list(request)
        return [o for o in listed["items"] if self._selected(request, o)]

    def _selected(self, request: rendering.Request, obj: Mapping[str, Any]) -> bool:
        selector = request.params.get("labelSelector", "")
        return selector_matches(selector, (obj.get("metadata") or {}).get("labels") or {})

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        info = self.resources[request.resource]
        group = request.resource.group
        return {
            "kind": f"{info.kind}List",
            "apiVersion": f"{group}/{request.resource.version}" if group else request.resource.version,
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": await self._listed(request),
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or self._selected(request, event.get("object") or {}):
                yield event

    def _serve_log(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.namespace, request.name)
        if (request.resource, *key) not in self.objects and key not in self.logs:
            raise kmock.KubernetesObjectNotFoundError()
        if request.params.get("previous") == "true":
            raise kmock.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f'previous terminated container "prefect-job" in pod "{request.name}" not found',
            )
        lines = self.logs.get(key, "").splitlines(keepends=True)
        tail = request.params.get("tailLines")
        return aiohttp.web.Response(text="".join(lines[-int(tail) :] if tail else lines))


class ApiServer:
    """The emulator served on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, namespace: str, roles: Mapping[str, Optional[list[dict]]], workdir: Path):
        self.namespace, self.workdir = namespace, workdir
        self.emulator = Emulator(identities=dict(roles), role_namespace=namespace, strict=False)
        self.urls: dict[str, str] = {}  # who -> base URL
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)

    @property
    def calls(self) -> list[Call]:
        return list(self.emulator.calls)

    def __enter__(self) -> "ApiServer":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes API stand-in did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator:
            servers = {}
            for who in self.emulator.identities:
                servers[who] = aiohttp.test_utils.RawTestServer(self.emulator, host="127.0.0.1", port=0)
                await servers[who].start_server()
                self.emulator.ports[servers[who].port] = who
                self.urls[who] = str(servers[who].make_url("")).rstrip("/")
            self._ready.set()
            try:
                await self._stopping.wait()
            finally:
                for server in servers.values():
                    await server.close()

    def put(self, resource: str, namespace: str, obj: dict) -> None:
        """Store an object as `kubectl apply` would have (no watch event: set up before watchers)."""
        meta = obj["metadata"]
        self.emulator.objects[kmock.resource(resource), namespace, meta["name"]] = {
            **obj,
            "metadata": {**meta, "namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
        }

    def kubeconfig(self, token: str) -> Path:
        """A kubeconfig file for one identity (its port; namespace: the Role's)."""
        path = self.workdir / f"kubeconfig-{token}"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "standin",
                    "clusters": [{"name": "standin", "cluster": {"server": self.urls[token]}}],
                    "users": [{"name": token, "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "standin",
                            "context": {"cluster": "standin", "user": token, "namespace": self.namespace},
                        }
                    ],
                }
            )
        )
        path.chmod(0o644)  # read by the worker container's user
        return path
