"""Errors a user can act on.

Each message is one line: which file, what is wrong, what to do. `transient` marks
errors worth retrying (network, throttling); bad data and bad parameters never are.
"""

from __future__ import annotations


class EchoflowError(Exception):
    """Base class: the message is shown to users as is, without a traceback."""

    transient = False


class ParameterError(EchoflowError):
    """A parameter is invalid; raised before any data is read."""


class InputNotFound(EchoflowError, FileNotFoundError):
    """A raw file, XML file or manifest does not exist."""


class AccessDenied(EchoflowError, PermissionError):
    """Storage refused a read or write (credentials, bucket policy, file mode)."""


class RawFileError(EchoflowError):
    """The raw file cannot be read as the declared sonar model (wrong model, truncated, corrupt)."""


class OutputError(EchoflowError):
    """The converted output could not be written."""


class OutputBusy(EchoflowError):
    """Another live writer holds the output's lock for longer than this writer may wait."""


class FileCancelled(EchoflowError):
    """The run was stopped (SIGTERM/SIGINT) before this file finished; nothing was committed."""


class TransientIOError(EchoflowError):
    """A network or storage hiccup; the operation may succeed when retried."""

    transient = True


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, EchoflowError) and exc.transient


def one_line(exc: BaseException) -> str:
    """A single-line description for summaries and the CLI."""
    if isinstance(exc, EchoflowError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
