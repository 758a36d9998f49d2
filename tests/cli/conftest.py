"""Fixtures of the CLI tests: the installed `echoflow` command against the session's Prefect
server, run to completion (`run_cli`) or in the background as `echoflow watch` (`start_watch`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

BIN = Path(sys.executable).parent


def cli_env(api: str, tmp_path: Path, columns: int, extra: dict[str, str] | None) -> dict[str, str]:
    """The test's environment plus the session's API and a home of the test's own."""
    return {
        **os.environ,
        "PREFECT_API_URL": api,
        "ECHOFLOW_HOME": str(tmp_path / "home"),
        "COLUMNS": str(columns),
        **(extra or {}),
    }


@pytest.fixture
def run_cli(prefect_server, tmp_path):
    """Run the installed `echoflow` command against the session's Prefect server."""

    def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "echoflow"), *args],
            capture_output=True,
            text=True,
            env=cli_env(prefect_server, tmp_path, 200, env),
            timeout=timeout,
        )

    return run


class WatchProcess:
    """`echoflow watch` running in the background; its output lines as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "echoflow"), "watch", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 120) -> float:
        """Until a line satisfies `predicate`; returns when that line was printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if predicate(line):
                    return when
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no such line within {timeout} s; output so far:\n{self.text()}")

    def count(self, predicate: Callable[[str], bool]) -> int:
        return sum(predicate(line) for _, line in list(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


@pytest.fixture
def start_watch(prefect_server, tmp_path) -> Iterator[Callable[..., WatchProcess]]:
    """Start `echoflow watch ARGS` against the session's Prefect server; stopped after the test."""
    started: list[WatchProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WatchProcess:
        w = WatchProcess(list(args), {**cli_env(prefect_server, tmp_path, 250, env), "PYTHONUNBUFFERED": "1"})
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(30)
