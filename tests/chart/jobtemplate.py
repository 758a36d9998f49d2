"""Render the echoflow chart and turn its work-pool base job template into the Job
that the prefect-kubernetes worker creates for a flow run.

    objects = render_chart(["k8s/values-kind.yaml"], {"image.tag": "dev"})
    template = base_job_template(objects)
    manifest = job_manifest_for_flow_run(template, flow_run, deployment, flow)

`job_manifest_for_flow_run` runs prefect-kubernetes' own code path
(KubernetesWorkerJobConfiguration.from_template_and_values + prepare_for_flow_run,
the two steps of BaseJobConfiguration.resolve_for_flow_run that the worker calls in
_submit_run_and_capture_errors), so the result is the manifest the worker hands to
BatchV1Api.create_namespaced_job. It needs a reachable Prefect API only when the
template references blocks or variables; pass `client` to use a given one.

`as_stored(manifest)` drops what the API server would prune from that request (pod-spec
fields Kubernetes does not know). The chart's template has none (parallelism and
completions sit on the Job), so for it the result equals the request; the tests assert so.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "echoflow"
K8S = REPO / "k8s"
KUBE_VERSIONS = ("1.29", "1.35")
BASE_JOB_TEMPLATE_KEY = "base-job-template.json"


class HelmNotFound(RuntimeError):
    pass


class HelmError(RuntimeError):
    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str):
        super().__init__(f"{' '.join(args)} exited {returncode}:\n{stderr}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def helm_binary() -> str:
    """$HELM, else helm on PATH, else <repo>/.tools/helm (scripts/fetch-tools.sh)."""
    candidates = [os.environ.get("HELM"), shutil.which("helm"), str(REPO / ".tools" / "helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise HelmNotFound("helm not found: set HELM, put helm on PATH or run `scripts/fetch-tools.sh .tools`")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [helm_binary(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise HelmError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def template_args(
    values_files: Iterable[str | Path] = (),
    set_values: Mapping[str, Any] | None = None,
    release: str = "echoflow",
    namespace: str = "echoflow",
    kube_version: str | None = None,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        path = Path(f)
        args += ["--values", str(path if path.is_absolute() else REPO / path)]
    for key, value in (set_values or {}).items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={_set_value(value)}"]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


def _set_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render_chart(
    values_files: Iterable[str | Path] = (),
    set_values: Mapping[str, Any] | None = None,
    release: str = "echoflow",
    namespace: str = "echoflow",
    kube_version: str | None = None,
) -> list[dict]:
    """`helm template` the chart; the rendered objects (hooks and tests included).

    values_files are relative to the repository unless absolute; set_values go to
    --set-string (str values) or --set (others, None as null).
    """
    proc = helm(*template_args(values_files, set_values, release, namespace, kube_version))
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(objects: Iterable[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def base_job_template(objects: Iterable[dict]) -> dict:
    """The work pool's base job template from the rendered ConfigMap."""
    import json

    maps = [o for o in objects if o.get("kind") == "ConfigMap" and BASE_JOB_TEMPLATE_KEY in (o.get("data") or {})]
    if len(maps) != 1:
        raise LookupError(f"expected one ConfigMap with {BASE_JOB_TEMPLATE_KEY}, found {len(maps)}")
    return json.loads(maps[0]["data"][BASE_JOB_TEMPLATE_KEY])


def flow_run_job_variables(flow_run: Any, deployment: Any = None) -> dict:
    """Deployment job_variables overlaid with the flow run's, env merged key by key
    (as BaseJobConfiguration.resolve_for_flow_run does)."""
    variables = copy.deepcopy(getattr(deployment, "job_variables", None) or {})
    run_vars = copy.deepcopy(getattr(flow_run, "job_variables", None) or {})
    if isinstance(variables.get("env"), dict):
        variables["env"].update(run_vars.pop("env", {}) or {})
    variables.update(run_vars)
    return variables


async def job_configuration_for_flow_run_async(
    template: dict,
    flow_run: Any,
    deployment: Any = None,
    flow: Any = None,
    variables: Mapping[str, Any] | None = None,
    work_pool: Any = None,
    worker_name: str | None = None,
    client: Any = None,
):
    """prefect-kubernetes' KubernetesWorkerJobConfiguration for a flow run."""
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    if variables is None:
        variables = flow_run_job_variables(flow_run, deployment)
    kwargs = {"client": client} if client is not None else {}
    configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
        base_job_template=copy.deepcopy(template), values=dict(variables), **kwargs
    )
    configuration.prepare_for_flow_run(
        flow_run=flow_run,
        deployment=deployment,
        flow=flow,
        work_pool=work_pool,
        worker_name=worker_name,
    )
    return configuration


async def job_manifest_for_flow_run_async(
    template: dict,
    flow_run: Any,
    deployment: Any = None,
    flow: Any = None,
    variables: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict:
    configuration = await job_configuration_for_flow_run_async(
        template, flow_run, deployment, flow, variables, **kwargs
    )
    return copy.deepcopy(configuration.job_manifest)


def job_manifest_for_flow_run(
    template: dict,
    flow_run: Any,
    deployment: Any = None,
    flow: Any = None,
    variables: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict:
    """The Job manifest the worker submits for `flow_run` (sync; not inside a running loop).

    variables: job variables; by default the deployment's overlaid with the flow run's.
    kwargs: work_pool, worker_name, client (passed through to prefect-kubernetes).
    """
    return asyncio.run(job_manifest_for_flow_run_async(template, flow_run, deployment, flow, variables, **kwargs))


# Job-level fields that older templates also put in the pod spec, where Kubernetes does not
# know them (the API server drops them; strict validation refuses them).
PRUNED_POD_SPEC_FIELDS = ("parallelism", "completions")


def as_stored(manifest: dict) -> dict:
    """The Job as the API server stores it (unknown pod-spec fields dropped)."""
    job = copy.deepcopy(manifest)
    pod_spec = job["spec"]["template"]["spec"]
    for field in PRUNED_POD_SPEC_FIELDS:
        pod_spec.pop(field, None)
    return job


def validation_errors(obj: dict, versions: Sequence[str] = KUBE_VERSIONS) -> list[str]:
    """Strict Kubernetes JSON-schema errors of `obj` for each version (empty: valid)."""
    import kubernetes_validate

    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            name = obj.get("metadata", {}).get("name") or obj.get("metadata", {}).get("generateName")
            errors.append(f"{version} {obj.get('kind')} {name} at /{where}: {exc.message}")
    return errors


_QUANTITY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (16Gi, 500m, 2, 1e3), to compare two of them."""
    text = str(value)
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(text)
