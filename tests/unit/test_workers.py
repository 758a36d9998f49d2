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
