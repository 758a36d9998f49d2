"""The Kubernetes path without a cluster: flow runs of the registered deployments run as the
Jobs prefect-kubernetes renders from the chart's base job template, each pod replayed with
`docker run` (tests/e2e/replay.py), against a real Prefect server and a real S3 server on
loopback. The test plays the worker (poll the pool, Pending, render the Job, start it); the
image runs the run itself with its own `prefect flow-run execute`.

Upload, trigger, wait and verify are scripts/e2e_steps.py, the same code `make e2e` runs on kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import replay
from samples import AZFP_RAW, AZFP_XML, EK60_RAW, REPO
from util import assert_matches_direct, ek60_copies, truncated_copy

sys.path.insert(0, str(REPO / "scripts"))
import e2e_steps as steps  # noqa: E402

pytestmark = pytest.mark.docker

BIN = Path(sys.executable).parent
VALUES = "k8s/values-kind.yaml"
POOL_LIMIT = 2
RAW, OUT = "replay-raw", "replay-out"


def _image_parts(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    return repository, tag


def _kind_secret(name: str) -> dict[str, str]:
    """The S3 Secret k8s/minio.yaml creates for the kind e2e."""
    for doc in yaml.safe_load_all((REPO / "k8s" / "minio.yaml").read_text()):
        if doc and doc["kind"] == "Secret" and doc["metadata"]["name"] == name:
            return doc["stringData"]
    raise LookupError(f"no Secret {name} in k8s/minio.yaml")


def _steps_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """scripts/e2e_steps.py as e2e.sh runs it (Prefect API and S3 from the environment)."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "e2e_steps.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"e2e_steps.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _explain(worker: replay.Worker) -> str:
    """Each Job the worker ran: its run, how it ended, the end of its pod's log."""
    lines = []
    for launch in worker.launches:
        result = launch.result
        lines.append(f"--- {launch.deployment} {launch.flow_run_name}: "
                     f"{result.reason if result else launch.error!r}")
        if result:
            lines += result.logs.splitlines()[-40:]
    return "\n".join(lines + [f"worker errors: {worker.errors!r}"])


def _run_jobs(cluster: dict, ids: list, timeout: float) -> tuple[dict, replay.Worker, str]:
    """Run the pool's worker until these flow runs end: (runs, worker, explanation)."""
    with replay.Worker(cluster["pool"], cluster["secrets"], node=cluster["node"]) as worker:
        runs = steps.wait(ids, timeout=timeout)
    why = _explain(worker)
    assert not worker.errors, why
    return runs, worker, why


def _states(flow_run_id) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run_states(flow_run_id)


def _state_time(flow_run_id, state_type: str) -> float:
    return next(s.timestamp.timestamp() for s in _states(flow_run_id) if s.type.value == state_type)


def _active_runs_peak(ids) -> int:
    """Most of these flow runs that were Pending or Running at the same time (what the
    server counts against the pool's concurrency limit), from their state histories."""
    events = []
    for fid in ids:
        states = _states(fid)
        start = next(s.timestamp for s in states if s.type.value == "PENDING")
        end = next(s.timestamp for s in states if s.is_final())
        events += [(start.timestamp(), 1), (end.timestamp(), -1)]
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


def _started(launch: replay.Launch) -> float:
    return replay.timestamp(launch.result.attempts[0].started_at)


def _same_as_direct(row: dict, tmp: Path, options: dict) -> None:
    """An EK60 output equals echopype's conversion of the sample under the source's own name."""
    name = row["source"].rsplit("/", 1)[-1]
    local = next(p for p in ek60_copies(tmp / "raw", 6) if p.name == name)
    assert_matches_direct(row["output"], local, "EK60", tmp, storage_options=options, source_url=row["source"])


def _summary(flow_run_id) -> dict[str, dict]:
    """The run's echoflow-summary table artifact: {source file name: row}."""
    from prefect_api import artifacts

    found = [a for a in artifacts(flow_run_id) if a.key == "echoflow-summary"]
    assert len(found) == 1, found
    rows = found[0].data if not isinstance(found[0].data, str) else json.loads(found[0].data)
    return {r["source"].rsplit("/", 1)[-1]: r for r in rows}


@pytest.fixture(scope="module")
def cluster(echoflow_image, prefect_server, s3_server, s3_env, s3_options, tmp_path_factory):
    """What `helm install` + k8s/minio.yaml set up, on loopback: buckets, the S3 Secret, and the
    pool + deployments registered by the chart's own hook command (`echoflow deploy ...`)
    with the chart's base job template for the test image."""
    import s3fs
    from prefect.client.orchestration import get_client

    sys.path.insert(0, str(REPO / "tests" / "chart"))
    import jobtemplate as jt

    fs = s3fs.S3FileSystem(**s3_options)
    for bucket in (RAW, OUT):
        if not fs.exists(bucket):
            fs.call_s3("create_bucket", Bucket=bucket)

    repository, tag = _image_parts(str(echoflow_image))
    objects = jt.render_chart([VALUES], {"image.repository": repository, "image.tag": tag,
                                         "workPool.concurrencyLimit": POOL_LIMIT})
    template = jt.base_job_template(objects)
    work = tmp_path_factory.mktemp("replay-cluster")
    template_file = work / "base-job-template.json"
    template_file.write_text(json.dumps(template))

    hook = [o for o in jt.find(objects, "Job") if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    assert len(hook) == 1, [o["metadata"]["name"] for o in jt.find(objects, "Job")]
    command = hook[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["echoflow", "deploy"], command
    at = command.index("--base-job-template") + 1
    command[at] = str(template_file)  # the ConfigMap the hook mounts
    assert command[command.index("--image") + 1] == str(echoflow_image)
    assert "--create-pool" in command and command[command.index("--concurrency-limit") + 1] == str(POOL_LIMIT)
    pool = command[command.index("--pool") + 1]

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ECHOFLOW_HOME": str(work / "home"), "COLUMNS": "200"}
    proc = subprocess.run([str(BIN / "echoflow"), *command[1:]], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with get_client(sync_client=True) as client:
        stored = client.read_work_pool(pool)
        for flow in ("convert-batch", "convert-cruise"):
            deployment = client.read_deployment_by_name(f"{flow}/echoflow")
            assert deployment.work_pool_name == pool
            assert deployment.job_variables == {"image": str(echoflow_image)}
        queue = client.read_work_queue_by_name("conversions", work_pool_name=pool)
    # The limit is on the conversions queue: cruise parents (default queue) never hold its slots.
    assert stored.type == "kubernetes" and queue.concurrency_limit == POOL_LIMIT
    assert stored.base_job_template == template, "the pool must hold the chart's template unchanged"

    secret_name = template["variables"]["properties"]["env_from"]["default"][0]["secretRef"]["name"]
    kind_secret = _kind_secret(secret_name)
    assert set(kind_secret) <= set(s3_env), (sorted(kind_secret), sorted(s3_env))
    yield {"pool": pool, "secrets": {secret_name: {k: s3_env[k] for k in kind_secret}},
           "node": replay.kind_worker_node(), "image": str(echoflow_image)}

    # Leave the session's server as we found it: other tests register these names too.
    from prefect.exceptions import ObjectNotFound

    from echoflow.deploy import FLOWS

    with get_client(sync_client=True) as client:
        for flow in FLOWS:
            try:
                deployment = client.read_deployment_by_name(f"{flow}/echoflow")
            except ObjectNotFound:
                continue
            if deployment.work_pool_name == pool:
                client.delete_deployment(deployment.id)
        client.delete_work_pool(pool)


@pytest.fixture(scope="module")
def samples(cluster, data_dir, s3_env, tmp_path_factory):
    # e2e_steps names its copies as tests/util.py does (the instrument's convention).
    assert steps.ek60_names(6) == [p.name for p in ek60_copies(tmp_path_factory.mktemp("names"), 6)]
    out = _steps_cli("upload-samples", "--data", str(data_dir), "--dest", f"s3://{RAW}/batch",
                     "--ek60-copies", "3", env=s3_env).stdout
    return json.loads(out)


def test_batch_runs_as_kubernetes_jobs(cluster, samples, s3_options, s3_env, tmp_path):
    ek60_out, azfp_out = f"s3://{OUT}/batch/ek60", f"s3://{OUT}/batch/azfp"
    ek60_id = steps.trigger("convert-batch/echoflow", {
        "sources": [f"s3://{RAW}/batch/ek60/*.raw"], "sonar_model": "EK60", "output_prefix": ek60_out,
        "output_type": "zarr", "concurrency": 2})
    azfp_id = _steps_cli("trigger", "convert-batch/echoflow", "--params", json.dumps({
        "sources": samples["azfp"], "sonar_model": "AZFP", "xml_path": samples["azfp_xml"],
        "output_prefix": azfp_out, "output_type": "netcdf"})).stdout.strip().splitlines()[-1]

    runs, worker, why = _run_jobs(cluster, [ek60_id, azfp_id], timeout=600)
    assert {str(fid): run.state_name for fid, run in runs.items()} == {str(ek60_id): "Completed", azfp_id: "Completed"}, why

    # One Job per run, the chart's pod, run by the image's own command.
    assert sorted(str(launch.flow_run_id) for launch in worker.launches) == sorted([str(ek60_id), azfp_id])
    assert worker.max_concurrent() <= POOL_LIMIT
    for launch in worker.launches:
        container = launch.manifest["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == cluster["image"]
        assert container["args"] == ["prefect", "flow-run", "execute"]
        assert launch.result.succeeded and len(launch.result.attempts) == 1, why
    ek60_launch = next(launch for launch in worker.launches if launch.flow_run_id == ek60_id)

    # Outputs: in S3, opening with echopype, equal to echopype's own conversion.
    rows = steps.verify(ek60_out, s3_options, expect=3)
    assert sorted(r["source"] for r in rows) == sorted(samples["ek60"])
    _same_as_direct(rows[0], tmp_path, s3_options)
    listing = _steps_cli("verify", azfp_out, "--expect", "1", env=s3_env).stdout
    assert f"{azfp_out}/{AZFP_RAW.stem}.nc" in listing and "AZFP" in listing, listing
    local = tmp_path / "azfp" / f"{AZFP_RAW.stem}.nc"
    local.parent.mkdir()
    import s3fs

    s3fs.S3FileSystem(**s3_options).get_file(f"{azfp_out}/{AZFP_RAW.stem}.nc", str(local))
    assert_matches_direct(str(local), AZFP_RAW, "AZFP", tmp_path / "azfp", xml=AZFP_XML,
                          source_url=samples["azfp"][0])

    # The run's logs reached Prefect from inside the pod: each file's "Convert File" task.
    logs = steps.flow_run_logs(ek60_id)
    task_lines = [rec.message for rec in logs if rec.task_run_id is not None]
    for url in samples["ek60"]:
        assert any(line.startswith(f"converted {url} -> ") for line in task_lines), task_lines
    assert any("3 files: 3 converted" in rec.message for rec in logs), [rec.message for rec in logs]
    assert "3 files: 3 converted" in ek60_launch.result.logs  # and in the pod's own log
    printed = _steps_cli("logs", str(ek60_id)).stdout
    assert printed.count("converted s3://") == 3, printed

    running = _state_time(ek60_id, "RUNNING")
    print(f"\npod replay: container start -> flow run Running {running - _started(ek60_launch):.1f}s, "
          f"docker run -> Running {running - ek60_launch.result.attempts[0].submitted:.1f}s, "
          f"Job {ek60_launch.ended - ek60_launch.started:.1f}s", file=sys.stderr)


def test_cruise_fans_out_child_jobs_within_the_pool_limit(cluster, s3_options, data_dir, tmp_path):
    raw, out = f"s3://{RAW}/cruise", f"s3://{OUT}/cruise"
    good = steps.upload([EK60_RAW] * 3, raw, s3_options, steps.ek60_names(3))
    corrupt_file = truncated_copy(tmp_path, 0.3)
    corrupt = steps.upload([corrupt_file], raw, s3_options)[0]
    params = {"sources": [f"{raw}/*.raw"], "sonar_model": "EK60", "output_prefix": out, "output_type": "zarr",
              "files_per_job": 1, "concurrency": 1, "poll_seconds": 2}

    parent = steps.trigger("convert-cruise/echoflow", params)
    runs, worker, why = _run_jobs(cluster, [parent], timeout=700)
    run = runs[parent]
    assert run.state_name == "PartiallyFailed", why

    children = steps.child_runs(parent)
    assert len(children) == 4, why
    assert _steps_cli("children", str(parent)).stdout.split() == [str(c.id) for c in children]
    listed = subprocess.run([sys.executable, str(REPO / "scripts" / "e2e_steps.py"), "wait",
                             *[str(c.id) for c in children]], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 1 and listed.stdout.count("ok ") == 3 and listed.stdout.count("BAD") == 1, listed
    assert sorted(c.state_name for c in children) == ["Completed"] * 3 + ["Failed"], why
    assert {c.parameters["sources"][0] for c in children} == {*good, corrupt}
    assert all(len(c.parameters["sources"]) == 1 for c in children)
    # Every run was its own Job: the parent, then one per child, never more than the pool allows.
    by_run = {launch.flow_run_id: launch for launch in worker.launches}
    assert set(by_run) == {parent, *(c.id for c in children)}, why
    assert by_run[parent].deployment == "convert-cruise/echoflow"
    child_launches = [by_run[c.id] for c in children]
    assert all(launch.deployment == "convert-batch/echoflow" for launch in child_launches)
    # The limit sits on the "conversions" queue; the waiting parent (default queue) takes none
    # of its slots, so children run side by side up to the limit and never beyond it.
    assert _active_runs_peak([c.id for c in children]) == POOL_LIMIT
    # A container outlives its run's final state by the engine's shutdown (~2 s): for a moment
    # the pods of two finished children can overlap the two that took their slots.
    assert worker.max_concurrent(child_launches) <= 2 * POOL_LIMIT
    final = {c.id: max(s.timestamp.timestamp() for s in _states(c.id) if s.is_final()) for c in children}
    linger = [replay.timestamp(by_run[fid].result.attempts[-1].finished_at) - t for fid, t in final.items()]
    print(f"\npod replay: containers at once {worker.max_concurrent()}, child containers at once "
          f"{worker.max_concurrent(child_launches)}, a pod outlives its run's final state by "
          f"{min(linger):.1f}-{max(linger):.1f}s", file=sys.stderr)

    summary = _summary(parent)
    assert len(summary) == 4
    assert {name: row["status"] for name, row in summary.items()} == {
        **{u.rsplit("/", 1)[-1]: "converted" for u in good}, corrupt_file.name: "failed"}
    assert "truncated" in summary[corrupt_file.name]["error"], summary
    rows = steps.verify(out, s3_options, expect=3)
    assert sorted(r["source"] for r in rows) == sorted(good)
    _same_as_direct(rows[-1], tmp_path, s3_options)
    before = steps.outputs(out, s3_options)

    # Re-run after the file is fixed: only that file goes out again, as one child Job.
    steps.upload([EK60_RAW], raw, s3_options, [corrupt_file.name])
    again = steps.trigger("convert-cruise/echoflow", params)
    runs, worker, why = _run_jobs(cluster, [again], timeout=400)
    run = runs[again]
    assert run.state_name == "Completed", why
    children = steps.child_runs(again)
    assert [c.parameters["sources"] for c in children] == [[corrupt]]
    assert len(worker.launches) == 2, why
    summary = _summary(again)
    assert {name: row["status"] for name, row in summary.items()} == {
        **{u.rsplit("/", 1)[-1]: "skipped" for u in good}, corrupt_file.name: "converted"}
    after = steps.outputs(out, s3_options)
    assert len(after) == 4
    assert all(after[url] == marker for url, marker in before.items()), "a complete output was converted again"
    steps.verify(out, s3_options, expect=4)


def test_replay_refuses_what_it_cannot_honour(cluster, tmp_path):
    """A chart change the replay does not model fails loudly instead of being dropped."""
    import copy

    sys.path.insert(0, str(REPO / "tests" / "chart"))
    import jobtemplate as jt
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(cluster["pool"])
        deployment = client.read_deployment_by_name("convert-batch/echoflow")
        flow = client.read_flow(deployment.flow_id)
        run = client.create_flow_run_from_deployment(deployment.id, parameters={
            "sources": ["s3://x/*.raw"], "sonar_model": "EK60", "output_prefix": "s3://y"})
        client.set_flow_run_state(run.id, Cancelled(), force=True)  # no worker may pick it up
    job = jt.as_stored(jt.job_manifest_for_flow_run(pool.base_job_template, run, deployment, flow, work_pool=pool))
    secrets, node = cluster["secrets"], cluster["node"]

    argv = replay.docker_run_args(job, secrets, {"EXTRA": "1"}, node=node, volume_root=tmp_path / "v")
    joined = " ".join(argv)
    for flag in ("--read-only", "--cap-drop ALL", "--security-opt no-new-privileges", "--user 1000:1000",
                 "--network host", "--pull=never", "--memory 3221225472", "--env EXTRA=1",
                 f"--env PREFECT__FLOW_RUN_ID={run.id}", "--env AWS_ENDPOINT_URL=http://127.0.0.1:"):
        assert flag in joined, (flag, joined)
    assert argv[-4:] == [cluster["image"], "prefect", "flow-run", "execute"]
    assert {p.name for p in (tmp_path / "v").iterdir()} == {"tmp", "home", "scratch"}

    def refused(change, error=replay.Unsupported, **kw):
        bad = copy.deepcopy(job)
        change(bad)
        with pytest.raises(error):
            replay.docker_run_args(bad, kw.pop("secrets", secrets), node=kw.pop("node", node),
                                   volume_root=tmp_path / "r")

    pod = lambda j: j["spec"]["template"]["spec"]  # noqa: E731
    ctr = lambda j: pod(j)["containers"][0]  # noqa: E731
    refused(lambda j: pod(j).update(affinity={"nodeAffinity": {}}))
    refused(lambda j: pod(j).update(initContainers=[{"name": "x", "image": "busybox"}]))
    refused(lambda j: pod(j)["volumes"].append({"name": "cfg", "configMap": {"name": "x"}}))
    refused(lambda j: ctr(j).update(ports=[{"containerPort": 80}]))
    refused(lambda j: ctr(j)["securityContext"].update(procMount="Unmasked"))
    refused(lambda j: ctr(j)["env"].append({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}))
    refused(lambda j: pod(j).update(parallelism=1))  # not as_stored()
    refused(lambda j: pod(j).update(automountServiceAccountToken=True))
    refused(lambda j: None, replay.PodRejected, secrets={})  # the S3 Secret does not exist
    refused(lambda j: None, replay.PodRejected, node=replay.Node())  # nodeSelector matches no node
    refused(lambda j: ctr(j)["resources"]["requests"].update(memory="10Ti"), replay.PodRejected)
    refused(lambda j: ctr(j)["securityContext"].update(runAsUser=0), replay.PodRejected)

    # valueFrom references resolve as the kubelet resolves them.
    ctr(job)["env"] += [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": next(iter(secrets)), "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "REF", "value": "$(POD)/$$(POD)/$(NOPE)"},
    ]
    planned = replay.plan_pod(job, secrets, node=node, volume_root=tmp_path / "p")
    assert planned.env["POD"] == planned.name and planned.name.startswith(planned.job_name + "-")
    assert planned.env["KEY"] == next(iter(secrets.values()))["AWS_ACCESS_KEY_ID"]
    assert planned.env["MEM"] == "3072"
    assert planned.env["REF"] == f"{planned.name}/$(POD)/$(NOPE)"
