"""Local processes the tests start: a free loopback port, waiting for an HTTP answer, stopping;
a Prefect process worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def process_worker(pool: str, folder: Path) -> Iterator[Path]:
    """`prefect worker start --type process` on `pool` of the session's API, polling every
    second, in `folder`; yields its log. Stopped with SIGTERM; one that has not exited 20 s
    later is killed with its flow-run processes, with a warning naming what was left (under
    load, `prefect worker start` can sit in its SIGTERM -> SIGINT forwarding for minutes)."""
    log = folder / "worker.log"
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "ECHOFLOW_HOME": str(folder / "home")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        env=env,
        cwd=folder,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            left = subprocess.run(["ps", "-o", "pid,etime,args", "-g", str(proc.pid)], capture_output=True, text=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            warnings.warn(f"the process worker ignored SIGTERM for 20 s; killed:\n{left.stdout}", stacklevel=1)
