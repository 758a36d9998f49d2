"""`echoflow deploy` registers `watch-prefix` with its schedule and a one-run-at-a-time limit."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

EXE = str(Path(sys.executable).parent / "echoflow")
SETTINGS = {
    "parameters": {
        "source": "s3://ship/DY1801/raw/*.raw",
        "sonar_model": "EK60",
        "output_prefix": "s3://shore/DY1801",
        "output_type": "zarr",
        "settle_seconds": 120,
    },
    "interval": 300,
}


def deploy(
    api: str, settings: object | None, *args: str, flows: tuple[str, ...] = ("convert-batch",)
) -> subprocess.CompletedProcess:
    """`echoflow deploy` of `flows` (all that it registers by default when empty) with
    ECHOFLOW_WATCH from `settings`."""
    env = {**os.environ, "PREFECT_API_URL": api}
    env.pop("ECHOFLOW_WATCH", None)
    if settings is not None:
        env["ECHOFLOW_WATCH"] = settings if isinstance(settings, str) else json.dumps(settings)
    return subprocess.run(
        [
            EXE,
            "deploy",
            "--pool",
            "watch-test",
            "--image",
            "echoflow:w",
            "--create-pool",
            *(arg for flow in flows for arg in ("--flow", flow)),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def read(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


@pytest.mark.slow  # four `echoflow deploy` runs; the chart's watch values register one too (tests/chart)
def test_watch_deployment_schedule_and_limit(prefect_server):
    first = deploy(prefect_server, SETTINGS, "--flow", "watch-prefix")
    assert first.returncode == 0, first.stderr
    d = read("watch-prefix/echoflow")
    assert d.work_queue_name == "default"  # it waits for its children: never holds a conversion slot
    assert d.parameters == SETTINGS["parameters"]
    ((s),) = d.schedules
    assert s.active and s.schedule.interval.total_seconds() == 300
    assert (d.global_concurrency_limit.limit if d.global_concurrency_limit else d.concurrency_limit) == 1
    assert d.concurrency_options.collision_strategy == "CANCEL_NEW"

    again = deploy(prefect_server, SETTINGS, "--flow", "watch-prefix")
    (row,) = [line for line in again.stdout.splitlines() if "watch-prefix/echoflow" in line]
    assert "unchanged" in row, again.stdout

    cron = deploy(prefect_server, {**SETTINGS, "interval": None, "cron": "*/5 * * * *"}, "--flow", "watch-prefix")
    assert cron.returncode == 0, cron.stderr
    ((s),) = read("watch-prefix/echoflow").schedules
    assert s.schedule.cron == "*/5 * * * *"

    off = deploy(prefect_server, {"enabled": False}, "--flow", "watch-prefix")
    assert off.returncode == 0, off.stderr
    assert read("watch-prefix/echoflow").schedules == []


def test_watch_settings_errors_are_one_line(prefect_server):
    """Each mistake in ECHOFLOW_WATCH is named on one line; `echoflow deploy` reports it so
    (exit 2, no traceback: shown for the first, the CLI reports every ParameterError alike)."""
    from echoflow.errors import ParameterError
    from echoflow.flows.watch import schedule_settings

    cases = [
        ("{nope", "watch settings are not valid JSON"),
        ({"parameters": {"source": "s3://a/"}, "interval": 60}, "parameters sonar_model, output_prefix must be set"),
        ({**SETTINGS, "cron": "* * * * *"}, "set exactly one of 'interval' (seconds) or 'cron'"),
        ({**SETTINGS, "interval": 1}, "interval must be a number of seconds ≥ 10"),
    ]
    for settings, expected in cases:
        with pytest.raises(ParameterError, match=re.escape(expected)) as caught:
            schedule_settings(settings if isinstance(settings, str) else json.dumps(settings))
        assert "\n" not in str(caught.value)
    proc = deploy(prefect_server, cases[0][0], "--flow", "watch-prefix")
    assert proc.returncode == 2 and cases[0][1] in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_watch_prefix_is_left_out_without_settings(prefect_server):
    """By default every flow is registered but watch-prefix, which needs a source to watch."""
    from prefect.exceptions import ObjectNotFound

    from echoflow.deploy import FLOWS

    proc = deploy(prefect_server, None, "--deployment-name", "unwatched", flows=())
    assert proc.returncode == 0, proc.stderr
    registered = set()
    for flow in FLOWS:
        try:
            read(f"{flow}/unwatched")
            registered.add(flow)
        except ObjectNotFound:
            pass
    assert registered == set(FLOWS) - {"watch-prefix"}, proc.stdout


@pytest.mark.slow  # waits for the Prefect server's scheduler loop to create runs
def test_schedule_is_live_on_the_server(prefect_server):
    """The server's scheduler creates the watch runs, with the deployment's parameters."""
    import time

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    settings = {**SETTINGS, "interval": 60}
    proc = deploy(prefect_server, settings, "--flow", "watch-prefix", "--deployment-name", "scheduled")
    assert proc.returncode == 0, proc.stderr
    d = read("watch-prefix/scheduled")
    deadline = time.monotonic() + 150
    runs: list = []
    while time.monotonic() < deadline and len(runs) < 2:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id]))
            )
        time.sleep(3)
    assert len(runs) >= 2, "the scheduler created no runs"
    starts = sorted(r.expected_start_time for r in runs)
    assert (starts[1] - starts[0]).total_seconds() == 60
    assert all(r.parameters["source"] == SETTINGS["parameters"]["source"] for r in runs)
    off = deploy(prefect_server, {"enabled": False}, "--flow", "watch-prefix", "--deployment-name", "scheduled")
    assert off.returncode == 0, off.stderr
    with get_client(sync_client=True) as client:
        left = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id]))
        )
    assert [r for r in left if r.state_name == "Scheduled"] == []  # unscheduled: its future runs are gone
