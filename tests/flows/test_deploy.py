"""`echoflow deploy` against a real Prefect server: pool + deployments, idempotent."""

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client

EXE = str(Path(sys.executable).parent / "echoflow")


def deploy(api, *args):
    env = {**os.environ, "PREFECT_API_URL": api}
    return subprocess.run([EXE, "deploy", *args], capture_output=True, text=True, env=env, timeout=300)


def test_deploy_creates_then_changes_nothing(prefect_server, tmp_path):
    from prefect_kubernetes.worker import KubernetesWorker

    template = KubernetesWorker.get_default_base_job_template()
    template["variables"]["properties"]["image"]["default"] = "echoflow:test"
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    args = [
        "--pool",
        "deploy-test",
        "--image",
        "registry.example/echoflow:1.2.3",
        "--create-pool",
        "--base-job-template",
        str(path),
        "--concurrency-limit",
        "4",
    ]

    first = deploy(prefect_server, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 6, first.stdout  # pool, queue, four flows
    second = deploy(prefect_server, *args)
    assert second.returncode == 0 and "created" not in second.stdout and "updated" not in second.stdout
    assert second.stdout.count("unchanged") == 6

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("deploy-test")
        assert pool.type == "kubernetes" and pool.concurrency_limit is None
        queue = client.read_work_queue_by_name("conversions", work_pool_name="deploy-test")
        assert queue.concurrency_limit == 4
        assert pool.base_job_template == template
        for flow in ("convert-raw-sonar", "convert-batch", "convert-cruise", "run-recipe"):
            d = client.read_deployment_by_name(f"{flow}/echoflow")
            assert d.work_pool_name == "deploy-test" and d.pull_steps == []
            assert d.work_queue_name == ("default" if flow in ("convert-cruise", "run-recipe") else "conversions")
            assert d.job_variables == {"image": "registry.example/echoflow:1.2.3"}
            assert d.entrypoint.startswith("echoflow.") and ":" not in d.entrypoint
        schema = client.read_deployment_by_name("convert-batch/echoflow").parameter_openapi_schema
        assert schema["properties"]["output_type"]["enum"] == ["netcdf", "zarr"]
        assert set(schema["required"]) == {"sources", "sonar_model", "output_prefix"}

    # the same limit again (no --concurrency-limit would clear it: "no limit")
    third = deploy(prefect_server, *args, "--image", "registry.example/echoflow:1.2.4")
    assert third.stdout.count("updated") == 4 and "unchanged" in third.stdout


def test_deploy_errors_are_one_line(prefect_server, tmp_path):
    missing = deploy(prefect_server, "--pool", "nope", "--image", "x")
    assert missing.returncode == 2 and "work pool 'nope' does not exist; pass --create-pool" in missing.stderr
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    proc = deploy(prefect_server, "--pool", "p", "--image", "x", "--base-job-template", str(bad))
    assert proc.returncode == 2 and "not valid JSON (line 1" in proc.stderr and "Traceback" not in proc.stderr
