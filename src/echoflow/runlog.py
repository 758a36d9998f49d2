"""What libraries print during a run goes to the run's log, not the terminal.

echopype logs notices (e.g. tau_effective) through its own terminal handlers and zarr
raises Python warnings; in this process they are routed to the current Prefect run's log.
Worker processes inherit this process's stderr, so during a run that is a pipe whose
lines are written to the run's log at the end. `-v` leaves everything as it is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Optional

from rich.console import Console


class RunLogHandler(logging.Handler):
    """Library log records into the current Prefect run's log (dropped outside a run)."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            logger = get_run_logger()
        except MissingContextError:
            return
        logger.log(record.levelno, "%s: %s", record.name, record.getMessage())


def _show_in_run_log(
    message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Optional[str] = None
) -> None:
    RunLogHandler().emit(
        logging.LogRecord(
            "py.warnings", logging.WARNING, filename, lineno, f"{category.__name__}: {message}", None, None
        )
    )


def libraries_to_run_log(load_echopype: bool = True) -> None:
    """echopype's log lines (e.g. tau_effective notices) and Python warnings (e.g. zarr's
    ZarrUserWarning) go to the run's log instead of this terminal."""
    warnings.showwarning = _show_in_run_log
    if not load_echopype:
        return
    from echoflow._echopype import load

    load()  # echopype sets up its loggers on import: replace their terminal handlers after that
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("echopype"):
            logger = logging.getLogger(name)
            for h in list(logger.handlers):
                if isinstance(h, logging.StreamHandler):
                    logger.removeHandler(h)
    top = logging.getLogger("echopype")  # its children propagate here
    top.addHandler(RunLogHandler(logging.INFO))
    top.propagate = False  # not on to the root logger's terminal handlers either


# How long the pipe stays quiet before the reader, told to close, takes it as drained.
DRAIN_SECONDS = 0.05


class LibraryOutput:
    """While a run lasts, what worker processes print (echopype's tau_effective notices,
    zarr's ZarrUserWarning...) goes to the run's log instead of the terminal.

    Workers inherit this process's stderr (file descriptor 2), and libraries here write to
    it too, so fd 2 becomes a pipe for the duration, read by a thread; echoflow's own
    consoles are pointed at the real stderr, kept aside. At the end the lines are written to the run's log (or, when no
    run was recorded, to the terminal after all: nothing is lost).
    """

    MAX_LINES = 5000
    active: Optional["LibraryOutput"] = None

    def __init__(self, enabled: bool, consoles: tuple[Console, ...] = ()) -> None:
        self.enabled, self.consoles = enabled, consoles
        self.run_id: Any = None
        self.lines: list[tuple[float, str]] = []
        self._real = -1
        self._real_file: Any = None
        self._closing = threading.Event()
        self._drained = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> "LibraryOutput":
        LibraryOutput.active = self
        if not self.enabled:
            return self
        import atexit

        atexit.register(self.__exit__)  # a command that fails half-way still restores stderr

        sys.stderr.flush()
        self._real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._real_file = os.fdopen(os.dup(self._real), "w", buffering=1)
        for console in self.consoles:
            console.file = self._real_file
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True, name="echoflow-stderr")
        self._reader.start()
        return self

    def _read(self, fd: int) -> None:
        # EOF may come late or never: workers still exiting hold the pipe's write end, and
        # so does a fork server started after the capture began, for as long as this
        # process lives. So once closing, a quiet pipe counts as drained; anything written
        # after that goes to the terminal (nothing is lost).
        import select

        pending = b""
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], DRAIN_SECONDS)
                if not ready:
                    if self._closing.is_set():
                        self._drained.set()
                    continue
                chunk = pipe.read(65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._keep(line)
        self._keep(pending)
        self._drained.set()

    def _keep(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if not line.strip():
            return
        with self._lock:
            if self._drained.is_set():
                os.write(2, (line + "\n").encode())
            elif len(self.lines) < self.MAX_LINES:
                self.lines.append((time.time(), line))

    def __exit__(self, *exc: Any) -> None:
        LibraryOutput.active = None
        if not self.enabled or self._real < 0:
            return
        import atexit

        atexit.unregister(self.__exit__)
        sys.stderr.flush()
        os.dup2(self._real, 2)  # closes this process's end of the pipe
        os.close(self._real)
        self._real = -1
        for console in self.consoles:
            console.file = None  # type: ignore[assignment]  # rich: None means sys.stderr
        self._real_file.close()
        self._closing.set()
        self._drained.wait(timeout=5.0)  # a pipe never quiet: stop collecting anyway
        with self._lock:
            self._drained.set()
        if self.lines and not self._to_run_log():
            for _, line in self.lines:
                sys.stderr.write(line + "\n")

    def _to_run_log(self) -> bool:
        if self.run_id is None:
            return False
        from datetime import datetime, timezone

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import LogCreate

        try:
            with get_client(sync_client=True) as client:
                client.create_logs(
                    [
                        LogCreate(
                            name="echoflow.libraries",
                            level=logging.WARNING,
                            message=line,
                            timestamp=datetime.fromtimestamp(t, timezone.utc),  # type: ignore[arg-type]  # coerced by pydantic
                            flow_run_id=self.run_id,
                        )
                        for t, line in list(self.lines)
                    ]
                )
        except Exception:  # noqa: BLE001 - the API is gone: show them here instead
            return False
        return True
