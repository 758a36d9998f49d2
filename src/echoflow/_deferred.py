"""Modules echopype imports up front that a worker may never use, loaded on first use.

`import echopype` takes ~1.7 CPU-s, and the fork server's import is on the way to the
first file. A quarter of it is scipy.signal (needed only to calibrate EK80 complex
samples), echopype.mask and echopype.clean (needed only by stages that call them). While
the fork server imports echopype, these three are created empty and run on their first
attribute access (importlib's LazyLoader), in the worker that needs them. Nothing changes
for code that uses them, except that it pays their import then, once per worker.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator, Optional, Sequence

DEFERRED = ("scipy.signal", "echopype.mask", "echopype.clean")


class _Deferring(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(
        self, name: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if name not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                # LazyLoader needs a loader that creates the module the default way
                # (source or bytecode, not an extension module).
                if isinstance(spec.loader, importlib.machinery.SourceFileLoader):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


@contextmanager
def deferring(names: Sequence[str] = DEFERRED) -> Iterator[None]:
    """Imports of `names` inside the block make modules that load on first use; imports
    after it are as usual (the deferred modules stay deferred until touched)."""
    finder = _Deferring(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
