"""The one way echoflow imports echopype.

echopype's import calls `logging.disable(logging.WARNING)` for the whole process,
which would silence Prefect's run logs; undo that and quiet echopype's own loggers only.
"""

from __future__ import annotations

import logging
from types import ModuleType

_ready = False


def load() -> ModuleType:
    global _ready
    import echopype

    if _ready:
        return echopype
    if logging.root.manager.disable == logging.WARNING:
        logging.disable(logging.NOTSET)
    for name in ["echopype", *logging.root.manager.loggerDict]:
        if name.startswith("echopype"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _ready = True
    return echopype
