"""What echoflow uses while it runs, in one place: which Prefect API, which worker pool,
who listens to progress.

The API is one per process (Prefect reads its settings from the process environment);
`home.connect` sets it. The pool and the listeners belong to a run and are entered around
it (`entered`); tasks on Prefect's threads see them because Prefect copies the context.

Start-up order, and why (the CLI follows it; a script calling a flow gets 3 and 4):
0. `convert`, `run`, `watch`: start the workers' fork server (`workers.start_server`)
   before anything else; its echopype import (~1.3 s, see _deferred.py) is the longest
   step before the first file. A command that then needs no worker stops it at exit.
1. Check the input without importing Prefect or echopype: bad input fails in ~0.1 s.
2. Start the worker pool (`workers.Workers`): its workers fork from the server once its
   import is done, while this process imports Prefect on the other core.
3. `home.connect()` sets PREFECT_API_URL (and PREFECT_HOME) before Prefect reads its
   settings, and makes Prefect re-read them if it was imported earlier.
4. Run the flow inside `entered(workers=..., listeners=...)`.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, TypeVar

from pydantic import BaseModel

from echoflow.workers import Workers

Listener = Callable[[str, Any], None]
T = TypeVar("T")


class Api(BaseModel):
    url: str
    source: str  # where it was configured, for the one line that says which API is used
    embedded: bool = False

    def describe(self) -> str:
        if not self.embedded:
            return f"Prefect API {self.url} (from {self.source})"
        if self.url.startswith("http"):
            return f"local Prefect API {self.url}, UI {self.url.removesuffix('/api')} ({self.source})"
        return f"{self.url} ({self.source})"


@dataclass(frozen=True)
class Runtime:
    workers: Optional[Workers] = None
    listeners: tuple[Listener, ...] = ()

    @property
    def api(self) -> Optional[Api]:
        return _api

    def emit(self, kind: str, value: Any) -> None:
        """Progress: ('total', n) once the files are known, then ('file', result) per file."""
        for fn in self.listeners:
            fn(kind, value)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the run's worker pool, or in this process when there is none."""
        return self.workers.run(fn, *args) if self.workers else fn(*args)

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """As `run`, without waiting: without a pool the call is made now."""
        if self.workers:
            return self.workers.submit(fn, *args)
        out: Future[T] = Future()
        try:
            out.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - delivered through the future
            out.set_exception(exc)
        return out


_api: Optional[Api] = None
_entered: ContextVar[Optional[Runtime]] = ContextVar("echoflow_runtime", default=None)


def current() -> Runtime:
    return _entered.get() or Runtime()


def set_api(api: Api) -> None:
    """Only `home.connect` calls this, once per process."""
    global _api
    _api = api


@contextmanager
def entered(workers: Optional[Workers] = None, listeners: tuple[Listener, ...] = ()) -> Iterator[Runtime]:
    """Run with this pool (else the enclosing one) and these listeners (added to the enclosing ones)."""
    outer = current()
    token = _entered.set(replace(outer, workers=workers or outer.workers, listeners=outer.listeners + listeners))
    try:
        yield current()
    finally:
        _entered.reset(token)
