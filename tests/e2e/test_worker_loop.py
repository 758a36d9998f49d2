"""The real worker in the loop: the chart's `prefect worker start --type kubernetes` (in the
image, with the chart's command line, environment and base job template) submits flow runs
as Jobs to a Kubernetes API stand-in (kube_api.py); the kubelet side (kubelet.py) runs each
Job's pod with Docker and writes pod and Job status back, which the worker's kopf observer
sees through its watches. A real Prefect server and a real S3 server, on loopback.

Each scenario is read back from Prefect and from the API; every request of the worker and
its observer is checked against the chart's Role.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from prefect_api import artifacts, task_runs
from samples import EK60_RAW, REPO
from standin import Cluster, installed
from util import assert_matches_direct, ek60_copies, truncated_copy
from worker_pod import WorkerPod

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "recipes"))
import e2e_steps as steps  # noqa: E402
from recipe_samples import adjacent_copies, group_recipe  # noqa: E402

pytestmark = pytest.mark.docker

QUEUE_LIMIT = 2
RAW, OUT = "loop-raw", "loop-out"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def image(request) -> str:
    """The session's image build (ECHOFLOW_E2E_IMAGE: an already built image, for local runs)."""
    return os.environ.get("ECHOFLOW_E2E_IMAGE") or str(request.getfixturevalue("echoflow_image"))


@pytest.fixture(scope="module")
def cluster(image, prefect_server, s3_server, s3_env, s3_options, tmp_path_factory):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    for bucket in (RAW, OUT):
        if not fs.exists(bucket):
            fs.call_s3("create_bucket", Bucket=bucket)
    with installed(
        image,
        prefect_server,
        s3_env,
        tmp_path_factory.mktemp("worker-loop"),
        {
            "workPool.concurrencyLimit": QUEUE_LIMIT,
            # The watch deployment, on a schedule that never comes during a test (1 January);
            # the test runs it by hand.
            "watch.enabled": True,
            "watch.source": f"s3://{RAW}/watch/*.raw",
            "watch.sonarModel": "EK60",
            "watch.outputPrefix": f"s3://{OUT}/watch",
            "watch.cron": "0 0 1 1 *",
            "watch.settleSeconds": 0,
            "watch.filesPerJob": 1,
        },
    ) as c:
        yield c
        worker_calls = [call for call in c.api.calls if call.who == "worker"]
        print(
            "\nworker + observer requests: "
            + ", ".join(
                f"{verb} {resource} x{n}"
                for (verb, resource), n in sorted(Counter((call.verb, call.resource) for call in worker_calls).items())
            ),
            file=sys.stderr,
        )


def explain(c: Cluster) -> str:
    """What the worker and the kubelet side saw, for a failing assertion."""
    pods = "\n".join(
        f"--- pod {p.name} ({p.flow_run_id}): exit {p.exit_code} {p.reason}\n"
        + "\n".join(p.logs.splitlines()[-30:])
        + "\n--- its flow run's log:\n"
        + "\n".join(r.message[:300] for r in steps.flow_run_logs(p.flow_run_id)[-20:])
        for p in c.kubelet.pods
    )
    return f"{pods}\nkubelet errors: {c.kubelet.errors!r}\n--- worker log:\n{c.worker.logs()[-6000:]}"


def jobs_of(c: Cluster, flow_run_id) -> list[dict]:
    """The Jobs of a flow run, as the API stand-in holds them (deleted ones left out)."""
    return jobs_with(c, f"prefect.io/flow-run-id={flow_run_id}")


def jobs_with(c: Cluster, selector: str) -> list[dict]:
    import httpx

    url = f"{c.api.urls['kubectl']}/apis/batch/v1/namespaces/{c.namespace}/jobs"
    return httpx.get(url, params={"labelSelector": selector}).json()["items"]


def settled_jobs(c: Cluster, flow_run_id) -> list[dict]:
    """The flow run's Jobs once each is Complete or Failed (a pod outlives its run's final
    state by the engine's shutdown)."""
    return eventually(
        lambda: jobs_of(c, flow_run_id), lambda jobs: jobs and all(j["status"].get("conditions") for j in jobs)
    )


def kubectl_get(c: Cluster) -> str:
    """What users run to watch flow runs on a cluster (README), with the stand-in's kubeconfig."""
    proc = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(c.api.kubeconfig("kubectl")),
            "get",
            "jobs,pods",
            "-l",
            "prefect.io/flow-run-id",
            "-n",
            c.namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def pod_events(flow_run_id) -> list[str]:
    """The observer's replicated pod events for a flow run (prefect.kubernetes.pod.*)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    with get_client(sync_client=True) as client:
        response = client.request(
            "POST",
            "/events/filter",
            json={
                "filter": EventFilter(
                    event=EventNameFilter(prefix=["prefect.kubernetes.pod."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ).model_dump(mode="json", exclude_unset=True),
                "limit": 50,
            },
        )
    return sorted(e["event"] for e in response.json()["events"])


def steps_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """scripts/e2e_steps.py as scripts/e2e.sh runs it on kind."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "e2e_steps.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"e2e_steps.py {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_batch_run_completes_as_a_job(cluster, s3_options, s3_env, tmp_path):
    raw, out = f"s3://{RAW}/batch", f"s3://{OUT}/batch"
    sources = steps.upload(ek60_copies(tmp_path / "raw", 2), raw, s3_options)
    run_id = steps.trigger(
        "convert-batch/echoflow",
        {"sources": sources, "sonar_model": "EK60", "output_prefix": out, "output_type": "zarr"},
    )
    runs = steps.wait([run_id], timeout=400)
    assert runs[run_id].state_name == "Completed", explain(cluster)

    # Prefect: outputs in S3, equal to echopype's own conversion (checked as e2e.sh does, too).
    assert steps_cli("verify", out, "--expect", "2", env=s3_env).stdout.count(f"{out}/") == 2
    assert steps_cli("logs", str(run_id)).stdout.count("converted s3://") == 2
    rows = steps.verify(out, s3_options, expect=2)
    local = next(p for p in ek60_copies(tmp_path / "raw", 2) if p.name == rows[0]["source"].rsplit("/", 1)[-1])
    assert_matches_direct(
        rows[0]["output"], local, "EK60", tmp_path, storage_options=s3_options, source_url=rows[0]["source"]
    )
    # The API: one Job, created by the worker from the chart's template, complete; its pod succeeded.
    (job,) = settled_jobs(cluster, run_id)
    assert job["status"]["succeeded"] == 1 and job["status"]["conditions"][-1]["type"] == "Complete"
    assert job["metadata"]["labels"]["prefect.io/worker-name"] == cluster.worker.name
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == cluster.image and container["args"] == ["prefect", "flow-run", "execute"]
    (pod,) = [p for p in cluster.kubelet.pods if p.flow_run_id == str(run_id)]
    assert pod.exit_code == 0 and "2 files: 2 converted" in pod.logs, explain(cluster)
    # The observer saw the pod through its watch and replicated its phases as Prefect events.
    eventually(
        lambda: set(pod_events(run_id)),
        lambda seen: {"prefect.kubernetes.pod.running", "prefect.kubernetes.pod.succeeded"} <= seen,
    )
    # kubectl finds the run's Job and pod with their status.
    listing = kubectl_get(cluster)
    line = next(row for row in listing.splitlines() if job["metadata"]["name"] in row and row.startswith("job"))
    assert "Complete" in line and "1/1" in line, listing
    assert any(pod.name in row and "Completed" in row for row in listing.splitlines()), listing


def test_restarted_worker_picks_up_where_it_was(cluster, s3_options, tmp_path):
    """A rollout or a drained node: the worker pod gets SIGTERM and a new pod (a new name)
    starts. The Job it created runs on; its run completes; the new worker's observer lists
    the Job and pod it did not see created, and the next runs are submitted by the new pod
    (the tests after this one check their Jobs' worker-name label)."""
    sources = steps.upload(ek60_copies(tmp_path / "raw", 1), f"s3://{RAW}/restart", s3_options)
    run_id = steps.trigger(
        "convert-batch/echoflow",
        {"sources": sources, "sonar_model": "EK60", "output_type": "zarr", "output_prefix": f"s3://{OUT}/restart"},
    )
    wait_state(run_id, "Running")
    old = cluster.worker.name
    cluster.worker.stop()
    cluster.worker.start()
    cluster.worker.wait_healthy()
    assert steps.wait([run_id], timeout=400)[run_id].state_name == "Completed", explain(cluster)
    (job,) = settled_jobs(cluster, run_id)
    assert job["metadata"]["labels"]["prefect.io/worker-name"] == old != cluster.worker.name
    # The new observer listed and watched the namespace again (kopf's initial list per pod).
    assert [c.verb for c in cluster.api.calls if c.who == "worker" and c.resource == "jobs"].count("list") >= 2
    steps.verify(f"s3://{OUT}/restart", s3_options, expect=1)


def test_cruise_fans_out_into_child_jobs_under_the_queue_limit(cluster, s3_options, tmp_path):
    raw, out = f"s3://{RAW}/cruise", f"s3://{OUT}/cruise"
    good = steps.upload([EK60_RAW] * 2, raw, s3_options, steps.ek60_names(2))
    corrupt = steps.upload([truncated_copy(tmp_path, 0.3)], raw, s3_options)[0]
    parent = steps.trigger(
        "convert-cruise/echoflow",
        {
            "sources": [f"{raw}/*.raw"],
            "sonar_model": "EK60",
            "output_prefix": out,
            "output_type": "zarr",
            "files_per_job": 1,
            "concurrency": 1,
            "poll_seconds": 2,
        },
    )
    runs = steps.wait([parent], timeout=600)
    assert runs[parent].state_name == "PartiallyFailed", explain(cluster)

    children = steps.child_runs(parent)
    assert sorted(c.state_name for c in children) == ["Completed", "Completed", "Failed"], explain(cluster)
    assert {c.parameters["sources"][0] for c in children} == {*good, corrupt}
    # Every run was its own Job, created by the worker through the API: the parent's, one per child.
    for run_id in [parent, *(c.id for c in children)]:
        (job,) = settled_jobs(cluster, run_id)
        assert job["metadata"]["labels"]["prefect.io/worker-name"] == cluster.worker.name
    assert steps_cli("children", str(parent)).stdout.split() == [str(c.id) for c in children]
    # The limit sits on the "conversions" queue: children ran side by side up to it, never beyond.
    assert active_peak([c.id for c in children]) == QUEUE_LIMIT
    assert sorted(r["source"] for r in steps.verify(out, s3_options, expect=2)) == sorted(good)


def test_watch_run_fans_new_files_out_as_jobs_and_takes_nothing_twice(cluster, s3_options):
    """The scheduled watch deployment as the chart registers it: one run lists the prefix and
    sends each new settled file to a conversion Job; the next run finds nothing new."""
    landed = steps.upload([EK60_RAW] * 2, f"s3://{RAW}/watch", s3_options, steps.ek60_names(2))
    first = steps.trigger("watch-prefix/echoflow", {})
    assert steps.wait([first], timeout=600)[first].state_name == "Completed", explain(cluster)
    (job,) = settled_jobs(cluster, first)  # the watch run is a Job of its own
    converted = [r["source"] for r in steps.verify(f"s3://{OUT}/watch", s3_options, expect=2)]
    assert sorted(converted) == sorted(landed)
    batch_jobs = jobs_with(cluster, "prefect.io/flow-name=convert-batch")
    assert batch_jobs, "no conversion Job"
    second = steps.trigger("watch-prefix/echoflow", {})
    assert steps.wait([second], timeout=600)[second].state_name == "Completed", explain(cluster)
    assert len(jobs_with(cluster, "prefect.io/flow-name=convert-batch")) == len(batch_jobs), "converted again"


def test_recipe_fans_out_into_file_jobs_then_a_group_job_and_resumes(cluster, s3_options, tmp_path):
    """`run-recipe/echoflow` as the chart registers it: the parent's Job only plans and
    waits; each file's chain (open_raw → compute_Sv → compute_MVBS) runs in a child Job on
    the limited queue, then the cruise-level MVBS of the group in one more child Job. A
    second run finds every output complete and starts no child."""
    raw, out = f"s3://{RAW}/recipe", f"s3://{OUT}/recipe"
    files = adjacent_copies(tmp_path / "raw", [0, 72, 144])  # 70 s each, pings at their names' times
    steps.upload(files, raw, s3_options)
    stems = [f.stem for f in files]
    params = {"recipe": group_recipe(raw, out, concurrency=1), "files_per_job": 1, "poll_seconds": 2}
    parent = steps.trigger("run-recipe/echoflow", params)
    runs = steps.wait([parent], timeout=600)
    assert runs[parent].state_name == "Completed", explain(cluster)
    assert runs[parent].work_queue_name == "default"  # a waiting parent holds no conversions slot

    # The parent fanned out: one child per file, then one for the group, on the limited queue.
    children = steps.child_runs(parent)
    assert [c.parameters["part"] for c in children] == [{"files": [s]} for s in stems] + [{"groups": ["dy"]}]
    assert all(c.state_name == "Completed" and c.work_queue_name == "conversions" for c in children), explain(cluster)
    # Each run was its own Job, created by the worker, and its own pod; the work happened in the
    # children's pods: each file's chain in its child, the group's MVBS in the last, none in the parent.
    for run_id in [parent, *(c.id for c in children)]:
        (job,) = settled_jobs(cluster, run_id)
        assert job["metadata"]["labels"]["prefect.io/worker-name"] == cluster.worker.name
        assert job["metadata"]["labels"]["prefect.io/flow-name"] == "run-recipe"
        (pod,) = [p for p in cluster.kubelet.pods if p.flow_run_id == str(run_id)]
        assert pod.exit_code == 0, explain(cluster)
    eventually(  # task runs arrive as events from the pods
        lambda: [
            sorted(t.name for t in task_runs(run_id) if t.name.startswith(("chain ", "compute_")))
            for run_id in [parent, *(c.id for c in children)]
        ],
        lambda work: work == [[]] + [[f"chain {s}"] for s in stems] + [["compute_MVBS dy"]],
    )
    # The limit sits on the "conversions" queue: two file children side by side, never three.
    assert active_peak([c.id for c in children]) == QUEUE_LIMIT

    # Per-file MVBS and the group's, each complete (its marker written after the data).
    mvbs = f"{out}/compute_MVBS"
    markers = steps.outputs(mvbs, s3_options)
    assert sorted(markers) == sorted(f"{mvbs}/{item}.zarr" for item in [*stems, "dy"])
    per_file = [xr.open_zarr(f"{mvbs}/{s}.zarr", storage_options=s3_options) for s in stems]
    cruise = xr.open_zarr(f"{mvbs}/dy.zarr", storage_options=s3_options)
    assert cruise["Sv"].dims == ("channel", "ping_time", "echo_range")
    assert cruise.sizes["channel"] == per_file[0].sizes["channel"] > 0
    assert cruise.sizes["echo_range"] == per_file[0].sizes["echo_range"] > 0
    # Every file's pings are in the cruise-level MVBS, on one 20 s grid from the first file's
    # first bin to the last file's last.
    times = cruise["ping_time"].values
    assert (np.diff(times) == np.timedelta64(20, "s")).all(), times
    assert times[0] == per_file[0]["ping_time"].values[0] and times[-1] == per_file[-1]["ping_time"].values[-1]
    for s in stems:
        first, last = (np.datetime64(markers[f"{mvbs}/{s}.zarr"][k]) for k in ("first_ping", "last_ping"))
        assert times[0] <= first and last < times[-1] + np.timedelta64(20, "s"), (s, first, last)
    pings = int(cruise["ping_count"].sum())
    assert pings == sum(int(f["ping_count"].sum()) for f in per_file) > 0
    assert int(cruise["Sv"].notnull().any(["channel", "echo_range"]).sum()) == len(times)

    # Resumable: a second run finds every output complete, starts no child, adds only its own Job.
    before = {j["metadata"]["name"] for j in jobs_with(cluster, "prefect.io/flow-name=run-recipe")}
    again = steps.trigger("run-recipe/echoflow", params)
    assert steps.wait([again], timeout=600)[again].state_name == "Completed", explain(cluster)
    assert steps.child_runs(again) == []
    (job,) = settled_jobs(cluster, again)
    after = {j["metadata"]["name"] for j in jobs_with(cluster, "prefect.io/flow-name=run-recipe")}
    assert after - before == {job["metadata"]["name"]}
    [table] = [a for a in artifacts(again) if a.key == "echoflow-recipe-dy"]
    assert {r["status"] for r in json.loads(table.data)} == {"skipped"}
    assert steps.outputs(mvbs, s3_options) == markers  # nothing written again


def states(run_id) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run_states(run_id)


def active_peak(ids) -> int:
    """Most of these flow runs Pending or Running at once (what the queue's limit counts)."""
    events = []
    for fid in ids:
        history = states(fid)
        start = next(s.timestamp for s in history if s.type.value == "PENDING")
        end = next(s.timestamp for s in history if s.is_final())
        events += [(start.timestamp(), 1), (end.timestamp(), -1)]
    running = peak = 0
    for _, step in sorted(events):  # at a tie, an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


def test_pod_killed_while_starting_is_marked_crashed_with_its_log(cluster):
    """The container is killed (SIGKILL, exit 137, as a node's OOM killer does) while the
    flow is being loaded, before the run is Running: nothing in the pod can report it, so
    the observer marks the run Crashed from the failed Job and forwards the pod's log tail."""
    run_id = steps.trigger(
        "convert-batch/echoflow",
        {"sources": [f"s3://{RAW}/batch/*.raw"], "sonar_model": "EK60", "output_prefix": f"s3://{OUT}/killed"},
    )
    cluster.kubelet.kill_on_log[str(run_id)] = "Downloading flow code"
    runs = steps.wait([run_id], timeout=300)
    assert runs[run_id].state_name == "Crashed", explain(cluster)
    assert runs[run_id].state.message == "No active or succeeded pods found for any job", explain(cluster)
    assert "Running" not in [s.name for s in states(run_id)]

    (pod,) = [p for p in cluster.kubelet.pods if p.flow_run_id == str(run_id)]
    assert pod.exit_code == 137, explain(cluster)
    (job,) = settled_jobs(cluster, run_id)
    assert job["status"]["failed"] == 1 and job["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    # The observer read the pod's log through pods/log and put its tail into the run's log.
    header = f"Container logs from container 'prefect-job' in pod '{pod.name}':"
    messages = eventually(lambda: [r.message for r in steps.flow_run_logs(run_id)], lambda m: header in m)
    excerpt = messages[messages.index(header) + 1 :]
    assert "Downloading flow code" in pod.logs
    assert any("Downloading flow code" in m for m in excerpt), (pod.logs[-2000:], excerpt[-5:])
    listing = kubectl_get(cluster)
    assert any(job["metadata"]["name"] in row and "Failed" in row for row in listing.splitlines()), listing
    assert any(pod.name in row and "Error" in row for row in listing.splitlines()), listing


def eventually(read, ok, timeout: float = 60):
    """read() until ok(value) (things the observer and the log shipper do asynchronously)."""
    deadline = time.monotonic() + timeout
    while not ok(value := read()):
        assert time.monotonic() < deadline, value
        time.sleep(1)
    return value


def wait_state(run_id, name: str, timeout: float = 300) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while (state := client.read_flow_run(run_id).state_name) != name:
            assert time.monotonic() < deadline and state not in ("Completed", "Failed", "Crashed", "Cancelled"), state
            time.sleep(1)


def test_cancel_stops_the_running_job(cluster, s3_options, tmp_path, prefect_server):
    """`prefect flow-run cancel` on a Running run: with Prefect 3.9 the run's own engine in the
    pod cancels it (the worker only deletes Jobs of runs it is still submitting), the pod
    exits and the Job ends; outputs stop part-way."""
    sources = steps.upload(ek60_copies(tmp_path / "raw", 4), f"s3://{RAW}/cancel", s3_options)
    run_id = steps.trigger(
        "convert-batch/echoflow",
        {"sources": sources, "sonar_model": "EK60", "output_prefix": f"s3://{OUT}/cancel", "concurrency": 1},
    )
    wait_state(run_id, "Running")
    proc = subprocess.run(
        [str(BIN / "prefect"), "flow-run", "cancel", str(run_id)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = steps.wait([run_id], timeout=180)
    assert runs[run_id].state_name == "Cancelled", explain(cluster)
    (job,) = settled_jobs(cluster, run_id)
    (pod,) = [p for p in cluster.kubelet.pods if p.flow_run_id == str(run_id)]
    assert pod.ended is not None and pod.ended < time.time(), explain(cluster)
    assert len(steps.outputs(f"s3://{OUT}/cancel", s3_options)) < len(sources)
    assert not [c for c in cluster.api.calls if c.who == "worker" and c.verb == "delete"]
    listing = kubectl_get(cluster)
    assert any(job["metadata"]["name"] in row for row in listing.splitlines()), listing


def test_worker_and_observer_stay_within_the_chart_role(cluster):
    worker = [c for c in cluster.api.calls if c.who == "worker"]
    denied = [str(c) for c in worker if not c.allowed]
    assert denied == [], denied
    made = {(c.verb, c.resource) for c in worker}
    # Submission, both watches and the crash-log read all happened, all in the Role.
    assert {
        ("create", "jobs"),
        ("list", "jobs"),
        ("watch", "jobs"),
        ("list", "pods"),
        ("watch", "pods"),
        ("get", "pods/log"),
    } <= made, sorted(made)
    assert {c.namespace for c in worker} == {cluster.namespace}


def test_observer_without_its_namespace_setting_is_denied(cluster, tmp_path, prefect_server):
    """Negative control: without PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES the
    observer watches cluster-wide, which the chart's namespaced Role does not allow."""
    (tmp_path / "worker").mkdir()
    control = WorkerPod.from_chart(
        cluster.objects,
        cluster.image,
        api_url=prefect_server,
        kubeconfig=cluster.api.kubeconfig("control"),
        workdir=tmp_path / "worker",
        drop_env=("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES",),
    )
    control.start()
    try:
        deadline = time.monotonic() + 120
        while not any(c.who == "control" and not c.allowed for c in cluster.api.calls):
            assert time.monotonic() < deadline, control.logs()[-3000:]
            time.sleep(1)
    finally:
        control.stop(grace=5)
    denied = sorted({str(c) for c in cluster.api.calls if c.who == "control" and not c.allowed})
    print(f"\nnegative control denials: {denied}", file=sys.stderr)
    assert (
        "control: list batch/jobs cluster-wide DENIED" in denied or "control: list pods cluster-wide DENIED" in denied
    )
