"""The embedded default: with no Prefect API configured, runs use Prefect's ephemeral
API on SQLite under ECHOFLOW_HOME (default ~/.echoflow), so nothing needs starting.

Must run before `prefect` is imported: Prefect reads its settings at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


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
    if env.get("ECHOFLOW_LOCAL_SERVER", "1") == "0":
        # Prefect's own per-process ephemeral API: nothing left running, slower start.
        env.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        return f"ephemeral Prefect API, database in {env['PREFECT_HOME']}"
    from echoflow.localserver import ensure

    env["PREFECT_API_URL"] = ensure(echoflow_home())
    return f"local Prefect API {env['PREFECT_API_URL']} (UI at {env['PREFECT_API_URL'][:-4]}), database in {env['PREFECT_HOME']}"
