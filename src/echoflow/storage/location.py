"""Locations: fsspec filesystems, how a URL is shown, and storage errors by kind.

Only the errors listed as transient here are retried; anything else fails its file at
once with its own message, so a full disk or a coding error is never shown as a
network hiccup nor retried.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from echoflow.errors import (
    AccessDenied,
    EchoflowError,
    InputNotFound,
    OutputError,
    ParameterError,
    TransientIOError,
    one_line,
)

if TYPE_CHECKING:
    import fsspec

# Bounded waits for object stores: an endpoint that stays down fails in ~30 s with the
# flows' task retries, instead of botocore's and s3fs's own multi-minute retry loops.
S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"}},
}
S3_RETRIES = 2  # s3fs's own retry loop (a class attribute, 5 by default)
RETRY_BUDGET = "3 attempts per file, 5 s connect timeout each"


def filesystem(url: str, options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    from fsspec.core import url_to_fs  # here, not at import: the CLI reads this module first

    opts = dict(options or {})
    if url.startswith(("s3://", "s3a://")):
        for key, value in S3_DEFAULTS.items():
            opts.setdefault(key, value)
    try:
        fs, path = url_to_fs(url, **opts)
    except (ImportError, ValueError) as exc:
        raise ParameterError(f"{url}: cannot open this location ({exc})") from exc
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        fs.retries = min(getattr(fs, "retries", S3_RETRIES), S3_RETRIES)
    return fs, path


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser()


def shown(url: str) -> str:
    """How a location appears in messages: local paths as given, URLs without secrets."""
    return public_url(url) if "://" in url else url


def public_url(url: str) -> str:
    """The URL without credentials or query strings (presigned signatures), for logs and attributes."""
    if "://" not in url:
        return str(Path(url).expanduser().absolute()) if url else url  # as given: no symlink resolution
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EPIPE,
    errno.EAGAIN,
}
TRANSIENT_NAMES = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
    "ClientPayloadError",
    "ServerTimeoutError",
    "IncompleteRead",
    "ResponseStreamingError",
)
TRANSIENT_CODES = (
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
    "TooManyRequests",
    "429",
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def is_transient_error(exc: BaseException) -> bool:
    """Only what a retry can fix: connections, timeouts, throttling, 5xx."""
    for e in _chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in TRANSIENT_NAMES:
            return True
        text = str(e)
        if any(f"({code})" in text or f"'{code}'" in text or f"Code: {code}" in text for code in TRANSIENT_CODES):
            return True
    return False


def nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    """Whether the file system holding `path` has (almost) no space left: HDF5 reports a
    full disk as a bare "HDF error", without errno."""
    import os

    for p in (path, *path.parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < margin
    return False


def io_error(exc: BaseException, url: str, action: str, written: Path | None = None) -> Exception:
    """Map a storage exception onto echoflow's error kinds: one line, transient only when
    retryable. `written`: the local path being written, checked for a full disk."""
    where = shown(url)
    if isinstance(exc, EchoflowError):
        return exc
    if written is not None and nearly_full(written):
        return OutputError(
            f"{written.parent}: no space left on device while {action} ({one_line(exc)[:120]}); "
            "free space or choose another --out / ECHOFLOW_SCRATCH"
        )
    if is_transient_error(exc):
        return TransientIOError(f"{where}: {action} failed ({one_line(exc)[:300]}); retried up to {RETRY_BUDGET}")
    oserr = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno), None)
    code = oserr.errno if oserr is not None else None
    path = getattr(oserr, "filename", None) or where
    if code == errno.ENOSPC:
        return OutputError(f"{path}: no space left on device while {action}; free space or choose another --out")
    if code == errno.EDQUOT:
        return OutputError(f"{path}: disk quota exceeded while {action}")
    if code == errno.EROFS:
        return OutputError(f"{path}: read-only file system while {action}; choose another --out")
    if code == errno.ENAMETOOLONG:
        return ParameterError(
            f"{where}: file name too long for this file system while {action}; shorten the name or the output folder"
        )
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(f"{where}: not found; check the path or bucket name")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        if is_remote(url):
            return AccessDenied(
                f"{where}: access denied (403) while {action}; check credentials "
                "(storage options, AWS_* variables) or use anonymous access (--anon) for public buckets"
            )
        return AccessDenied(f"{path}: permission denied while {action}; check the folder's owner and mode")
    if isinstance(exc, IsADirectoryError):
        return ParameterError(f"{where}: is a directory; pass a glob such as {where.rstrip('/')}/*.raw")
    text = one_line(exc)
    if "NoCredentials" in text or "Unable to locate credentials" in text:
        return AccessDenied(f"{where}: no credentials for {action}; set AWS credentials or use --anon")
    return OutputError(f"{where}: {action} failed ({text[:300]})")
