"""Worker output during a run: collected for the run's log, nothing lost after it."""

from __future__ import annotations

import subprocess
import sys
import time

from echoflow.runlog import LibraryOutput

HOLDER = "import sys, time; print('before', file=sys.stderr, flush=True); time.sleep(2); print('after', file=sys.stderr, flush=True)"


def test_output_is_collected_until_drained_then_goes_to_the_terminal(capfd):
    """A process that keeps the pipe open (as the workers' fork server does) neither holds
    up the end of the run nor loses what it writes after it."""
    lib = LibraryOutput(True).__enter__()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER])
    try:
        deadline = time.monotonic() + 30
        while not any(line == "before" for _, line in lib.lines):
            assert time.monotonic() < deadline, "the reader never saw the child's line"
            time.sleep(0.05)
        lib.__exit__(None, None, None)
        assert proc.poll() is None  # ended while the pipe was still held open
        proc.wait(30)
        time.sleep(0.5)  # the reader hands the late line on
    finally:
        proc.kill()
    err = capfd.readouterr().err
    assert "before" in err  # no run recorded: the collected lines go to the terminal
    assert "after" in err  # written once the run's lines were handed on: not lost
