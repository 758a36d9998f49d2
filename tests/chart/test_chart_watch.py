"""The chart's `watch` values reach `echoflow deploy` (the hook's ECHOFLOW_WATCH) and register a
scheduled watch-prefix deployment on the real Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jobtemplate as jt
import pytest
from prefect.client.orchestration import get_client

EXE = str(Path(sys.executable).parent / "echoflow")
WATCH = {
    "watch.enabled": True,
    "watch.source": "s3://ship-uploads/DY1801/EK60/*.raw",
    "watch.sonarModel": "EK60",
    "watch.outputPrefix": "s3://shore/DY1801",
    "watch.settleSeconds": 90,
}


def hook_env(values: dict) -> dict[str, str]:
    """The env of the deployments hook Job's container, as rendered with `values`."""
    objects = jt.render_chart(set_values=values)
    (job,) = [o for o in jt.find(objects, "Job") if o["metadata"]["name"].endswith("-deploy")]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def refused(values: dict) -> str:
    """helm's error for values the chart's schema refuses."""
    with pytest.raises(jt.HelmError) as caught:
        jt.render_chart(set_values=values)
    return caught.value.stderr


def test_chart_values_become_a_scheduled_deployment(prefect_server, helm_bin):
    env = hook_env({**WATCH, "watch.cron": "*/10 * * * *", "deployments.name": "ship"})
    settings = json.loads(env["ECHOFLOW_WATCH"])
    assert settings["cron"] == "*/10 * * * *" and "interval" not in settings
    assert settings["parameters"]["batch_deployment"] == "convert-batch/ship"  # children of this release

    proc = subprocess.run(
        [EXE, "deploy", "--pool", "watch-chart", "--image", "echoflow:c", "--create-pool", "--deployment-name", "ship"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_API_URL": prefect_server, "ECHOFLOW_WATCH": env["ECHOFLOW_WATCH"]},
    )
    assert proc.returncode == 0, proc.stderr
    with get_client(sync_client=True) as client:
        d = client.read_deployment_by_name("watch-prefix/ship")
    assert d.parameters["source"] == WATCH["watch.source"] and d.parameters["settle_seconds"] == 90
    # A small pod for the run that lists and waits; its children get the pool's defaults.
    assert d.job_variables == {
        "image": "echoflow:c",
        "cpu_request": "250m",
        "memory_request": "768Mi",
        "cpu_limit": "1",
        "memory_limit": "2Gi",
    }
    ((s),) = d.schedules
    assert s.schedule.cron == "*/10 * * * *" and s.active


def test_chart_watch_values_checked(helm_bin):
    assert "ECHOFLOW_WATCH" not in hook_env({})  # nothing to watch: not registered
    off = hook_env({"watch.source": "s3://ship-uploads/x/"})
    assert json.loads(off["ECHOFLOW_WATCH"]) == {"enabled": False}  # registered, unscheduled
    interval = json.loads(hook_env(WATCH)["ECHOFLOW_WATCH"])
    assert interval["interval"] == 300 and interval["timezone"] == "UTC"
    assert "/watch/sonarModel" in refused({"watch.enabled": True, "watch.source": "s3://x/"})
    assert "/watch/interval" in refused({**WATCH, "watch.interval": 5})
