"""Worker processes for echopype's GIL-bound parsing.

On Linux, workers are forked from a fork server that imported echopype once (about
1.7 CPU-s), so a pool of N costs one import, not N, and its workers share the imported
pages. Elsewhere they are spawned and import it themselves. Either way they start as soon
as the pool exists, so they are warm by the time the flow has planned its files. A worker
that dies (e.g. killed for memory) breaks the pool; the pool is rebuilt and the error is
reported as transient, so Prefect's task retries resubmit the affected files.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from echoflow.errors import FileCancelled, TransientIOError

T = TypeVar("T")


def available_cpus() -> int:
    """CPUs this process may use: affinity, then a cgroup v2 quota (a pod's cpu limit)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


PARENT_POLL_SECONDS = 0.5
BOOKKEEPING_NICE = 5


def yield_to_workers() -> None:
    """Run this thread, and the threads it starts from now on, below the workers' priority:
    on a busy machine the conversions come first and the run's bookkeeping (Prefect states,
    logs) waits; it is never the critical path, as each worker has a file queued. Linux
    only, where a priority belongs to a thread: the workers and the thread that starts the
    pool (`__enter__`, before this) keep theirs."""
    if sys.platform == "linux":
        try:
            os.nice(BOOKKEEPING_NICE)
        except OSError:
            pass


_busy = False  # in a worker: whether a file is being processed right now


def _abort_file(signum: int, frame: Any) -> None:
    if not _busy:  # idle (e.g. the whole process group was signalled): nothing to unwind
        os._exit(0)
    raise FileCancelled("stopped before this file finished; nothing was committed (run again to convert it)")


def _call(fn: Callable[..., T], *args: Any) -> T:
    global _busy
    _busy = True
    try:
        return fn(*args)
    finally:
        _busy = False


def _watch_parent(parent: int) -> None:
    """Exit when the pool's owner is gone, however it died (SIGKILL included). Its output
    lock dies with it; its staging is swept by the output's next writer. A forked worker's
    parent is the fork server, so the owner is watched by pid: a pidfd where there is one
    (immune to pid reuse), else by polling."""
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
        os._exit(1)
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)


def _warm(parent: int, env: dict[str, str], cwd: str) -> None:
    # A forked worker starts with the fork server's environment and folder, from when the
    # server started; give it its owner's, as a spawned one would have.
    if os.environ != env:
        os.environ.clear()
        os.environ.update(env)
    if os.getcwd() != cwd:
        os.chdir(cwd)
    # Ctrl-C reaches the whole process group: the parent decides what stops, and asks a
    # worker to abort its file with SIGTERM, which unwinds it (staging removed, lock freed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _abort_file)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="echoflow-parent").start()
    from echoflow._echopype import load

    load()
    # The import leaves ~165k long-lived objects; freezing them (in workers only, whose
    # lives are conversions) makes the gc.collect() after each file take microseconds
    # instead of ~70 ms.
    gc.collect()
    gc.freeze()


def _context() -> multiprocessing.context.BaseContext:
    if sys.platform != "linux":  # fork after importing echopype's libraries is unsafe on macOS
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Only before the server's first start; later calls are no-ops for a running server.
    ctx.set_forkserver_preload(["echoflow._preload"])
    return ctx


class Workers:
    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._pool: Optional[ProcessPoolExecutor] = None

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.count,
                    mp_context=_context(),
                    initializer=_warm,
                    initargs=(os.getpid(), dict(os.environ), os.getcwd()),
                )
                for _ in range(self.count):  # start every worker now, not on first use
                    self._pool.submit(int)
            return self._pool

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._get()
        try:
            # submit() itself raises when another thread's file already broke the pool
            future: Future = pool.submit(_call, fn, *args)
            return future.result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise TransientIOError("a worker process died during the conversion (out of memory?)") from None

    def abort(self, kill_after: float = 5.0) -> None:
        """Ask every worker to abort its file (SIGTERM: the file unwinds and cleans up), and
        kill those still alive `kill_after` seconds later. A later run() starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        # The executor has no public way to signal its processes.
        procs = list(getattr(pool, "_processes", {}).values())
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

        def reap() -> None:
            deadline = time.monotonic() + kill_after
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
            pool.shutdown(wait=False, cancel_futures=True)

        threading.Thread(target=reap, daemon=True, name="echoflow-reaper").start()

    def release(self) -> None:
        """Let the processes exit now, while the caller wraps up; a later run() starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def __enter__(self) -> "Workers":
        # Starting a forked worker waits for the fork server's echopype import; do that
        # waiting on a thread so the caller goes on (the CLI imports Prefect meanwhile).
        # A first run() waits for the pool on the lock.
        threading.Thread(target=self._get, daemon=True, name="echoflow-pool-start").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
