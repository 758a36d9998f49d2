"""The embedded default: with no Prefect API configured, runs use Prefect's ephemeral
API on SQLite under ECHOFLOW_HOME (default ~/.echoflow), so nothing needs starting.

Must run before `prefect` is imported: Prefect reads its settings at import time.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_embedded = False


def echoflow_home() -> Path:
    return Path(os.environ.get("ECHOFLOW_HOME") or "~/.echoflow").expanduser()


def use_embedded_default(quiet: bool = True) -> str:
    """Configure the environment; returns where runs are recorded (for messages)."""
    env = os.environ
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if quiet:
        # The CLI shows its own progress and summary; run logs still reach the API.
        env.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    if not env.get("PREFECT_HOME"):
        home = echoflow_home() / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    global _embedded
    _embedded = True
    if env.get("ECHOFLOW_LOCAL_SERVER", "1") == "0":
        # Prefect's own per-process ephemeral API: nothing left running, slower start.
        env.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        return f"ephemeral Prefect API, database in {env['PREFECT_HOME']}"
    from echoflow.localserver import ensure

    env["PREFECT_API_URL"] = ensure(echoflow_home())
    return f"local Prefect API {env['PREFECT_API_URL']} (UI at {env['PREFECT_API_URL'][:-4]}), database in {env['PREFECT_HOME']}"


@contextmanager
def foreground_run() -> Iterator[None]:
    """Around a flow the CLI runs in its own process on the embedded API: no run heartbeats.

    Heartbeats let a shared server notice runs whose process died; the embedded API only
    serves this machine's CLI, which sees its runs end, and Prefect's heartbeat thread
    makes every run's end wait up to a second for it to wake.
    """
    if not _embedded:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
