"""A graceful stop on SIGTERM / SIGINT: take no new file, let running files finish within
a grace period, then abort them cleanly.

Kubernetes stops a pod with SIGTERM and kills it `terminationGracePeriodSeconds` (30 s by
default) later, so the default grace is 25 s: enough to finish a typical file, and time
left to record the run. A second signal aborts at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def grace_seconds() -> float:
    return float(os.environ.get("ECHOFLOW_STOP_GRACE_SECONDS", "25"))


class Stop:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.requested = threading.Event()
        self.forced = threading.Event()
        self.signum: Optional[int] = None
        self.at: Optional[float] = None

    def request(self, signum: int) -> None:
        if self.requested.is_set():
            self.forced.set()
            return
        self.signum, self.at = signum, time.monotonic()
        self.requested.set()

    def is_set(self) -> bool:
        return self.requested.is_set()

    def due(self) -> bool:
        """True once running files must be aborted: grace over, or a second signal."""
        if self.forced.is_set():
            return True
        return self.at is not None and time.monotonic() - self.at >= self.grace

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "stop"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


@contextmanager
def on_signals(grace: Optional[float] = None) -> Iterator[Stop]:
    """Catch SIGTERM/SIGINT while the block runs (main thread only; elsewhere signals keep
    their handlers and the Stop is never set)."""
    stop = Stop(grace_seconds() if grace is None else grace)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.request(signum)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
