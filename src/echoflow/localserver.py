"""A Prefect API on loopback that the CLI starts on first use and reuses.

Prefect's per-process ephemeral API costs ~8 s of start-up on every command; this
one starts once (SQLite under ECHOFLOW_HOME), serves later commands at once, and
exits by itself after ECHOFLOW_SERVER_IDLE_SECONDS (default 1800) without requests.
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
from typing import Iterator, Optional

import httpx

from echoflow.errors import EchoflowError

STARTUP_TIMEOUT = float(os.environ.get("ECHOFLOW_SERVER_STARTUP_TIMEOUT", "120"))

# This API records the runs of one machine's CLI: schedules, work pools and automations
# belong to a shared server, and their loops would only take CPU from conversions.
QUIET_SERVICES = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
    "SCHEDULER", "LATE_RUNS", "FOREMAN", "TRIGGERS", "PAUSE_EXPIRATIONS", "REPOSSESSOR")}


def state_file(home: Path) -> Path:
    return home / "server.json"


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running(home: Path) -> Optional[str]:
    """The API URL of a live local server, or None."""
    try:
        url = json.loads(state_file(home).read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    return url if healthy(url) else None


@contextmanager
def _lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two commands at once must not start two servers
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure(home: Path) -> str:
    """Start the local server unless one is running; return its API URL."""
    url = running(home)
    if url:
        return url
    with _lock(home):
        url = running(home)
        if url:
            return url
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        log = open(home / "server.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "echoflow.localserver", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PREFECT_API_URL": "", **QUIET_SERVICES},
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy(url, timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise EchoflowError(
                    f"the local Prefect API did not start; see {home / 'server.log'} "
                    "(or set PREFECT_API_URL to use another server)")
            time.sleep(0.2)
        state_file(home).write_text(json.dumps({"url": url, "pid": proc.pid}))
        return url


def stop(home: Path) -> bool:
    try:
        pid = json.loads(state_file(home).read_text())["pid"]
        os.kill(pid, 15)
    except (OSError, ValueError, KeyError):
        return False
    finally:
        state_file(home).unlink(missing_ok=True)
    return True


def serve(port: int) -> None:
    """Run the Prefect API (and UI) until idle for too long."""
    import uvicorn
    from prefect.server.api.server import create_app

    idle_limit = float(os.environ.get("ECHOFLOW_SERVER_IDLE_SECONDS", "1800"))
    last = [time.monotonic()]
    app = create_app(final=True)

    @app.middleware("http")
    async def touch(request, call_next):  # type: ignore[no-untyped-def]
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
