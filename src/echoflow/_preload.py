"""Imported once by the workers' fork server: echopype and what the workers run loaded,
and their import-time objects frozen out of the garbage collector, so each worker forked
from it starts warm (the echoflow modules alone cost a fresh worker ~0.13 s)."""

import gc
import signal

# The server may start before its owner has parsed its input (workers.start_server), and
# Ctrl-C reaches the whole process group: the owner decides what stops.
signal.signal(signal.SIGINT, signal.SIG_IGN)
# The imports create ~165k objects that live as long as the process: collecting while
# they are made, and once more after, would cost ~0.25 s before the first file can start.
gc.disable()

import echoflow.convert  # noqa: E402,F401 - after the two lines above; what workers run
import echoflow.recipes.chain  # noqa: E402,F401
import echoflow.recipes.reduce  # noqa: E402,F401
from echoflow._deferred import deferring  # noqa: E402
from echoflow._echopype import load  # noqa: E402

with deferring():  # what EK60/AZFP chains never use loads in the worker that first does
    load()
gc.freeze()  # out of every later collection: workers collect after each file
gc.enable()
