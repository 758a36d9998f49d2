"""Imported once by the workers' fork server: echopype loaded and its import-time objects
frozen out of the garbage collector, so each worker forked from it starts warm."""

import gc

from echoflow._echopype import load

load()
gc.collect()
gc.freeze()
