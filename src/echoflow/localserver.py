"""A Prefect API (and UI) on loopback that echoflow starts on first use and reuses.

Prefect's per-process ephemeral API costs ~8 s of start-up on every command; this
one starts once (SQLite under ECHOFLOW_HOME), serves later commands at once, and
exits by itself after ECHOFLOW_SERVER_IDLE_SECONDS (default 1800) without requests.

Its port is stable per home: DEFAULT_PORT (or ECHOFLOW_SERVER_PORT), the next free
one when that is taken, remembered in `<home>/server.json`, so bookmarks keep working.
The server answers `/echoflow-home` with its home, so a Prefect server someone else runs
on the remembered port is never mistaken for this one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx

from echoflow.errors import EchoflowError

STARTUP_TIMEOUT = float(os.environ.get("ECHOFLOW_SERVER_STARTUP_TIMEOUT", "120"))
DEFAULT_PORT = 4290  # not Prefect's 4200: a user's own server there stays theirs
PORTS_TRIED = 50
IDENTITY_PATH = "/echoflow-home"

# This API records the runs of one machine's CLI: schedules, work pools and automations
# belong to a shared server, and their loops would only take CPU from conversions.
QUIET_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "TRIGGERS", "PAUSE_EXPIRATIONS", "REPOSSESSOR")
}


def state_file(home: Path) -> Path:
    return home / "server.json"


def _state(home: Path) -> dict[str, Any]:
    try:
        data = json.loads(state_file(home).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(home: Path, **values: Any) -> None:
    state_file(home).write_text(json.dumps({**_state(home), **values}))


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def ui_url(api: str) -> str:
    return api.removesuffix("/api")


def preferred_port(home: Path) -> int:
    port = _state(home).get("port")
    return port if isinstance(port, int) else int(os.environ.get("ECHOFLOW_SERVER_PORT", DEFAULT_PORT))


def _ours(port: int, home: Path, timeout: float = 1.0) -> bool:
    """The server on `port` is the one serving `home` (not another Prefect, not another home)."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}{IDENTITY_PATH}", timeout=timeout)
        return r.status_code == 200 and r.json().get("home") == str(home.resolve())
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def running(home: Path) -> Optional[str]:
    """The API URL of this home's live local server, or None."""
    port = _state(home).get("port")
    return api_url(port) if isinstance(port, int) and _ours(port, home) else None


@contextmanager
def _lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two commands at once must not start two servers
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start(home: Path, port: int) -> Optional[subprocess.Popen]:
    """Start a server on `port`; None when it could not take the port (someone was faster)."""
    url = api_url(port)
    env = {
        **os.environ,
        **QUIET_SERVICES,
        "PREFECT_HOME": str(home / "prefect"),
        # The UI asks /ui-settings where the API is: this server's own port, not 4200.
        "PREFECT_API_URL": "",
        "PREFECT_UI_API_URL": url,
        "PREFECT_UI_URL": ui_url(url),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "ECHOFLOW_HOME": str(home.resolve()),
    }
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "echoflow.localserver", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _ours(port, home, timeout=0.5):
        if proc.poll() is not None:
            return None
        if time.monotonic() > deadline:
            proc.kill()
            raise EchoflowError(
                f"the local Prefect API did not start within {STARTUP_TIMEOUT:.0f} s; see {home / 'server.log'}"
            )
        time.sleep(0.2)
    return proc


def ensure(home: Path) -> str:
    """Start this home's local server unless it is running; return its API URL."""
    url = running(home)
    if url:
        return url
    with _lock(home):
        url = running(home)
        if url:
            return url
        first = preferred_port(home)
        for port in range(first, first + PORTS_TRIED):
            if not _free(port):
                continue
            proc = _start(home, port)
            if proc is not None:
                _save(home, port=port, pid=proc.pid)
                return api_url(port)
        raise EchoflowError(
            f"the local Prefect API could not start: ports {first}-{first + PORTS_TRIED - 1} "
            f"are taken or it failed (see {home / 'server.log'})"
        )


def stop(home: Path) -> bool:
    """Stop this home's server; its port stays remembered for the next start."""
    pid = _state(home).get("pid")
    if running(home) is None or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 15)
    except OSError:
        return False
    deadline = time.monotonic() + 15
    while running(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    _save(home, pid=None)
    return True


def serve(port: int) -> None:
    """Run the Prefect API (and UI) until idle for too long."""
    import uvicorn
    from fastapi.responses import JSONResponse
    from prefect.server.api.server import create_app

    idle_limit = float(os.environ.get("ECHOFLOW_SERVER_IDLE_SECONDS", "1800"))
    # Bookkeeping for runs whose conversions need the CPU more: on a busy machine it waits.
    os.nice(int(os.environ.get("ECHOFLOW_SERVER_NICE", "10")))
    home = os.environ.get("ECHOFLOW_HOME", "")
    last = [time.monotonic()]
    app = create_app(final=True)

    @app.middleware("http")
    async def touch(request, call_next):
        if request.url.path == IDENTITY_PATH:
            return JSONResponse({"home": home})
        last[0] = time.monotonic()
        return await call_next(request)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))

    def watchdog() -> None:
        while not server.should_exit:
            time.sleep(5)
            if time.monotonic() - last[0] > idle_limit:
                server.should_exit = True

    threading.Thread(target=watchdog, daemon=True).start()
    server.run()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
