"""Which Prefect API echoflow records runs on.

Whatever the user configured for Prefect wins — the environment, the active profile
(`prefect config set` writes there), `.env` / `prefect.toml` — as Prefect itself resolves
it. Only when nothing is configured does echoflow use its embedded default: a local API
on SQLite under ECHOFLOW_HOME (default ~/.echoflow), started on first use and shared by
the CLI, scripts and notebooks.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import httpx

from echoflow import runtime
from echoflow.errors import EchoflowError
from echoflow.runtime import Api


def echoflow_home() -> Path:
    return Path(os.environ.get("ECHOFLOW_HOME") or "~/.echoflow").expanduser()


def connected() -> Optional[Api]:
    """The API this process already uses, if `connect` has run."""
    return runtime.current().api


def configured_api() -> Optional[Api]:
    """The API the user configured for Prefect, by Prefect's own settings resolution."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return None
    if os.environ.get("PREFECT_API_URL"):
        return Api(url=url, source="PREFECT_API_URL")
    from prefect.settings.profiles import load_current_profile

    profile = load_current_profile()
    if any(setting.name == "PREFECT_API_URL" for setting in profile.settings):
        return Api(url=url, source=f"Prefect profile {profile.name!r}")
    return Api(url=url, source="Prefect settings")


def check_reachable(api: Api) -> None:
    """One clear line instead of a client traceback when a configured API does not answer."""
    try:
        httpx.get(f"{api.url.rstrip('/')}/health", timeout=float(os.environ.get("ECHOFLOW_API_TIMEOUT", "5")))
    except httpx.HTTPError as exc:  # any HTTP answer means something is there
        raise EchoflowError(
            f"the Prefect API {api.url} (from {api.source}) is unreachable: {type(exc).__name__}"
        ) from None


def _refresh_prefect() -> None:
    import sys

    if "prefect.context" in sys.modules:  # settings are read once per process: re-read them
        sys.modules["prefect.context"].refresh_global_settings_context()


def connect(check: bool = True) -> Api:
    """Point this process at the user's API, else at the embedded default (once per process)."""
    if (known := connected()) is not None:
        return known
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    api = configured_api()
    if api is not None:
        if check:
            check_reachable(api)
    elif os.environ.get("ECHOFLOW_LOCAL_SERVER", "1") == "0":
        # Prefect's own per-process ephemeral API: nothing left running, slower start.
        home = echoflow_home() / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        api = Api(url=f"ephemeral Prefect API, database in {home}", source="ECHOFLOW_LOCAL_SERVER=0", embedded=True)
    else:
        from echoflow.localserver import ensure

        os.environ["PREFECT_API_URL"] = ensure(echoflow_home())
        api = Api(
            url=os.environ["PREFECT_API_URL"],
            source=f"no Prefect API configured; ECHOFLOW_HOME {echoflow_home()}",
            embedded=True,
        )
    _refresh_prefect()
    runtime.set_api(api)
    return api


def use_embedded_default(quiet: bool = True) -> str:
    """Connect (see `connect`); returns the one line that says where runs are recorded."""
    if quiet:
        # The CLI shows its own progress and summary; run logs still reach the API.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return connect().describe()


@contextmanager
def foreground_run() -> Iterator[None]:
    """Around a flow the CLI runs in its own process on the embedded API: no run heartbeats.

    Heartbeats let a shared server notice runs whose process died; the embedded API only
    serves this machine's CLI, which sees its runs end, and Prefect's heartbeat thread
    makes every run's end wait up to a second for it to wake.
    """
    api = connected()
    if api is None or not api.embedded:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
