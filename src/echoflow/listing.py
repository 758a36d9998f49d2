"""Listing a watched source once: a folder (files directly in it), a glob (`**` lists
recursively) or an `s3://` prefix, with each file's size, modification time and ETag."""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from echoflow import storage
from echoflow.errors import ParameterError

# A folder source holds raw files beside other things: never take these.
SKIP_SUFFIXES = (".nc", ".zarr", ".json", ".xml", ".txt", ".md", ".tmp", ".part", ".partial")


@dataclass(frozen=True)
class Listed:
    """One file of a listing."""

    url: str
    size: int
    mtime: Optional[float]  # seconds since the epoch; None when the store does not say
    etag: Optional[str]

    def fingerprint(self) -> list[Any]:
        return [self.size, self.mtime, self.etag]


def _mtime(info: dict[str, Any]) -> Optional[float]:
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return None


def split_source(source: str) -> tuple[str, Optional[str], bool]:
    """(folder to list, glob the names must match or None, whether to list recursively)."""
    if not storage.is_glob(source):
        return source.rstrip("/") or "/", None, False
    scheme, sep, path = source.rpartition("://")
    parts = path.split("/")
    first = next(i for i, p in enumerate(parts) if storage.is_glob(p))
    root = "/".join(parts[:first]) or ("/" if path.startswith("/") else ".")
    return f"{scheme}{sep}{root}", source, first < len(parts) - 1 or "**" in path


def list_source(
    source: str, options: Optional[dict[str, Any]], ready_suffix: Optional[str] = None
) -> tuple[list[Listed], set[str]]:
    """One listing of the source: its raw files, and the URLs whose sidecar is present."""
    root, pattern, recursive = split_source(source)
    fs, path = storage.filesystem(root, options)
    remote = storage.is_remote(root)
    fs.invalidate_cache(path)  # s3fs keeps listings; the point is to see new files
    try:
        infos = fs.find(path, detail=True).values() if recursive else fs.ls(path, detail=True)
    except FileNotFoundError:
        return [], set()  # an empty prefix: nothing uploaded yet
    except Exception as exc:
        raise storage.io_error(exc, source, "listing the watched files") from exc
    if pattern:
        _, _, pattern_path = pattern.rpartition("://")
    files: list[Listed] = []
    sidecars: set[str] = set()
    for info in infos:
        if info.get("type") not in (None, "file"):
            continue
        name = str(info["name"])
        url = fs.unstrip_protocol(name) if remote else name
        base = posixpath.basename(name)
        if ready_suffix and base.endswith(ready_suffix):
            sidecars.add(url[: -len(ready_suffix)])
            continue
        if base.startswith("."):
            continue
        if pattern:
            if not fnmatch.fnmatchcase(name, pattern_path.removeprefix("./")) and not fnmatch.fnmatchcase(url, pattern):
                continue
        elif base.lower().endswith(SKIP_SUFFIXES):
            continue
        etag = info.get("ETag") or info.get("etag")
        files.append(
            Listed(
                url=url,
                size=int(info.get("size") or 0),
                mtime=_mtime(info),
                etag=str(etag).strip('"') if etag else None,
            )
        )
    return sorted(files, key=lambda f: f.url), sidecars


def check_source(source: str) -> None:
    """A local folder that does not exist is a typo, not an empty upload area: say so at once."""
    root, _, _ = split_source(source)
    if not storage.is_remote(root) and not Path(root.removeprefix("file://")).expanduser().is_dir():
        raise ParameterError(f"{source}: no such folder; check the path (the folder must exist to be watched)")
