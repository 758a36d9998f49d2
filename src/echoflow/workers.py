"""Worker processes for echopype's GIL-bound parsing.

On Linux, workers are forked from a fork server that imported echopype once (about
1.3 CPU-s, what workers rarely need deferred: `_deferred`), so a pool of N costs one
import, not N, and its workers share the imported pages. Elsewhere they are spawned and
import it themselves. Either way they start as soon as the pool exists, so they are warm
by the time the flow has planned its files. A worker that dies (e.g. killed for memory)
breaks the pool; the pool is rebuilt and the error is reported as transient, so Prefect's
task retries resubmit the affected files.
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


class StderrOf:
    """The owner's stderr (fd 2) as it is when a worker starts, sent to the worker as its
    own copy: a forked worker would otherwise inherit the fork server's, which may predate
    the owner's capture of library output (see runlog.LibraryOutput)."""

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd  # valid only while a process is spawned

        return (_received_fd, (DupFd(2),))


def _received_fd(dup: Any) -> int:
    return int(dup.detach())


def _warm(parent: int, env: dict[str, str], cwd: str, stderr: Any = None) -> None:
    if isinstance(stderr, int) and stderr != 2:
        os.dup2(stderr, 2)
        os.close(stderr)
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


def start_server() -> None:
    """Start the fork server now, before the command has read its input: its echopype
    import (~1.3 s) is the longest step before the first file, and this way it overlaps all
    the others. The caller calls `stop_unused_server` at exit, so that the import is not
    left running for nothing when no pool used it (e.g. a re-run over complete outputs):
    it would also hold the caller's stderr open. Linux only."""
    if sys.platform != "linux":
        return
    from multiprocessing import forkserver

    _context()
    # The server and multiprocessing's resource tracker (started with it) would keep this
    # terminal as their stderr, before the run captures library output: the tracker's notice
    # about the pool's semaphores at exit would land there. Workers get the owner's stderr
    # of their time (StderrOf); the server's own failures show as the pool's.
    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(quiet, 2)
        forkserver.ensure_running()
    except OSError:
        pass  # the pool will try again, and report what fails
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


_pools_made = 0


def stop_unused_server() -> None:
    if _pools_made or sys.platform != "linux":
        return
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)  # no public accessor
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


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
                global _pools_made
                _pools_made += 1
                self._pool = ProcessPoolExecutor(
                    self.count,
                    mp_context=_context(),
                    initializer=_warm,
                    initargs=(os.getpid(), dict(os.environ), os.getcwd(), StderrOf()),
                )
                for _ in range(self.count):  # start every worker now, not on first use
                    self._pool.submit(int)
            return self._pool

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """`fn(*args)` on a worker. A worker that died fails the future with a transient
        error, after which the next submit starts a new pool."""
        pool = self._get()
        out: Future[T] = Future()
        try:
            # submit() itself raises when another file already broke the pool
            inner = pool.submit(_call, fn, *args)
        except BrokenProcessPool:
            out.set_exception(self._broken(pool))
            return out

        def settle(f: Future) -> None:
            if f.cancelled():
                out.set_exception(FileCancelled("not started: the worker pool was stopped"))
            elif isinstance(f.exception(), BrokenProcessPool):
                out.set_exception(self._broken(pool))
            elif f.exception() is not None:
                out.set_exception(f.exception())
            else:
                out.set_result(f.result())

        inner.add_done_callback(settle)
        return out

    def _broken(self, pool: ProcessPoolExecutor) -> TransientIOError:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        # Not on this thread: it may be the executor's own, inside its broken-pool handling.
        stop = threading.Thread(target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True}, daemon=True)
        stop.start()
        return TransientIOError("a worker process died during the conversion (out of memory?)")

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
