import os

import pytest

from echoflow.errors import TransientIOError, is_transient
from echoflow.workers import Workers


def pid() -> int:
    return os.getpid()


def die() -> None:
    os._exit(9)  # what an out-of-memory kill looks like to the pool


def test_runs_in_other_processes_and_survives_a_dead_worker():
    with Workers(2) as workers:
        first = workers.run(pid)
        assert first != os.getpid()
        with pytest.raises(TransientIOError, match="worker process died") as info:
            workers.run(die)
        assert is_transient(info.value)  # so Prefect's retry resubmits the file
        assert workers.run(pid) not in (os.getpid(), None)  # a fresh pool took over


def test_a_file_sent_after_the_pool_broke_is_retryable():
    """Another file's worker died while this one waited: submit() itself fails then."""
    import signal
    import time

    with Workers(1) as workers:
        os.kill(workers.run(pid), signal.SIGKILL)
        time.sleep(1.5)  # the pool notices the death before the next file arrives
        with pytest.raises(TransientIOError, match="worker process died"):
            workers.run(pid)
        assert workers.run(pid) != os.getpid()


def test_release_lets_workers_go_and_a_later_run_starts_new_ones():
    workers = Workers(1)
    with workers:
        first = workers.run(pid)
        workers.release()
        second = workers.run(pid)
    assert first != second and os.getpid() not in (first, second)


def frozen_objects() -> int:
    import gc

    from echoflow._echopype import load

    load()
    return gc.get_freeze_count()


def test_a_worker_freezes_echopypes_import_out_of_the_collector():
    """Otherwise the gc.collect() after each file walks ~165k import-time objects."""
    with Workers(1) as workers:
        assert workers.run(frozen_objects) > 100_000


def cpu_seconds_so_far() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="workers are forked from a warm server on Linux only")
def test_workers_start_warm_without_importing_echopype_each():
    """echopype's import (~1.7 CPU-s) is paid once by the fork server, not by each worker."""
    with Workers(2) as workers:
        spent = [workers.run(cpu_seconds_so_far) for _ in range(4)]
    assert max(spent) < 0.5, spent


def deferred_then_used() -> tuple:
    import sys

    from echoflow._deferred import DEFERRED

    def kinds() -> list[str]:
        return [type(sys.modules.get(n)).__name__ for n in DEFERRED]

    before = kinds()
    import echopype
    import scipy.signal

    computed = scipy.signal.convolve2d([[1.0, 2.0]], [[3.0]]).tolist()
    assert callable(echopype.mask.apply_mask) and callable(echopype.clean.remove_background_noise)
    return before, computed, kinds()


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="workers are forked from a warm server on Linux only")
def test_modules_a_chain_rarely_needs_load_in_the_worker_that_first_uses_them():
    """scipy.signal, echopype.mask and echopype.clean are a quarter of echopype's import;
    the fork server leaves them for first use, and using them then works as usual."""
    with Workers(1) as workers:
        before, computed, after = workers.run(deferred_then_used)
    assert before == ["_LazyModule"] * 3, before  # not loaded by the server's import
    assert computed == [[3.0, 6.0]]
    assert after == ["module"] * 3, after


def env_and_folder() -> tuple:
    return os.environ.get("ECHOFLOW_TEST_MARK"), os.getcwd()


def test_a_worker_has_its_owners_environment_and_folder(monkeypatch, tmp_path):
    """Forked workers would otherwise see the fork server's, from whenever it started."""
    with Workers(1) as workers:
        workers.run(int)
    monkeypatch.setenv("ECHOFLOW_TEST_MARK", "set later")
    monkeypatch.chdir(tmp_path)
    with Workers(1) as workers:
        assert workers.run(env_and_folder) == ("set later", str(tmp_path))
