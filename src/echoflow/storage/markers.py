"""Completion markers: `<output>.echoflow.json`, written last by the output's only writer.

A marker holds the writer's id, the commit time and a manifest (relative name -> size) of
everything committed; an output is complete only while a listing agrees with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from echoflow.errors import ParameterError
from echoflow.storage.location import filesystem, io_error, is_remote, local_path

if TYPE_CHECKING:
    import fsspec

MARKER_SUFFIX = ".echoflow.json"
Manifest = dict[str, int]


def marker_url(output: str) -> str:
    return output.rstrip("/") + MARKER_SUFFIX


def check_output_name(output: str) -> None:
    """A local output's marker must fit the file system's 255-byte names too."""
    if is_remote(output):
        return
    name = local_path(output).name + MARKER_SUFFIX
    if len(name.encode()) > 255:
        raise ParameterError(
            f"{output}: output name too long ({len(name.encode())} bytes with its marker "
            f"suffix {MARKER_SUFFIX}; file systems allow 255): shorten the file name"
        )


def manifest_of(path: Path) -> Manifest:
    """Relative name -> size of a local file ("" for the file itself) or folder tree."""
    if path.is_file():
        return {"": path.stat().st_size}
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def _listed_manifest(fs: fsspec.AbstractFileSystem, path: str) -> Optional[Manifest]:
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") == "file":
        return {"": int(info["size"])}
    found = fs.find(path, detail=True)
    root = path.rstrip("/") + "/"
    return {k[len(root) :]: int(v["size"]) for k, v in found.items() if k.startswith(root)}


def agrees(record: Any, listed: Optional[Manifest]) -> bool:
    return isinstance(record, dict) and listed is not None and record.get("manifest") == listed


def read_marker(output: str, options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The completion record of an output, or None unless marker and content agree."""
    fs, path = filesystem(output, options)
    try:
        fs.invalidate_cache(marker_url(path))
        with fs.open(marker_url(path), "rt") as f:
            record = json.load(f)
        listed = _listed_manifest(fs, path)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a torn marker is no marker
    except Exception as exc:
        raise io_error(exc, output, "checking for an existing output") from exc
    return record if agrees(record, listed) else None


def complete_outputs(prefix: str, outputs: list[str], options: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The completion records of those `outputs` (each directly under `prefix`) that are
    complete, for a whole cruise at once: one recursive listing of the prefix, then only the
    markers of listed outputs, read in one batch, each checked against the listing."""
    fs, root = filesystem(prefix, options)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # s3fs caches listings; other processes wrote since
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise io_error(exc, prefix, "listing existing outputs") from exc
    names = {out.rstrip("/").rsplit("/", 1)[-1]: out for out in outputs}
    listed: dict[str, Manifest] = {}
    for key, info in found.items():
        rel = key[len(root) + 1 :] if key.startswith(root + "/") else None
        if rel is None:
            continue
        top, _, rest = rel.partition("/")
        if top in names:
            listed.setdefault(top, {})[rest] = int(info["size"])
    markers = {f"{root}/{name}{MARKER_SUFFIX}": name for name in listed if f"{root}/{name}{MARKER_SUFFIX}" in found}
    if not markers:
        return {}
    try:
        texts = fs.cat(list(markers), on_error="return")
    except Exception as exc:
        raise io_error(exc, prefix, "reading completion markers") from exc
    records = {}
    for marker, text in texts.items():
        name = markers.get(marker)
        if name is None or isinstance(text, BaseException):
            continue  # vanished since the listing: not complete
        try:
            record = json.loads(text)
        except ValueError:
            continue  # a torn marker is no marker
        if agrees(record, listed[name]):
            records[names[name]] = record
    return records
