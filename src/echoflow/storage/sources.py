"""Sources: paths, globs, manifests and URLs expanded to one list, and output names.

Output naming rule: `<prefix>/<name><.nc|.zarr>`, where `<name>` is the source's file name
with its final suffix removed — unless that suffix is itself part of what makes the file
unique, as AZFP's numbered suffixes are (`17031001.01A`, `17031001.02A`: two files of one
hour), in which case it is kept (`17031001.01A.nc`).
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any

from echoflow.errors import InputNotFound
from echoflow.storage.location import filesystem, io_error, is_remote, public_url

MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
GLOB_CHARS = set("*?[")
# AZFP: <YYMMDDHH>.<NN><letter>, where NN numbers the files of one hour.
NUMBERED_SUFFIX = re.compile(r"\.\d{2}[A-Za-z]$")


def _join(base_dir: str, entry: str) -> str:
    if "://" in entry or entry.startswith("/"):
        return entry
    return posixpath.join(base_dir, entry)


def read_manifest(url: str, options: dict[str, Any] | None) -> list[str]:
    """Lines of a text manifest: one URL or path per line, '#' comments; relative to the manifest."""
    try:
        import fsspec

        with fsspec.open(url, "rt", **(options or {})) as f:
            lines = f.read().splitlines()
    except Exception as exc:
        raise io_error(exc, url, "reading the manifest") from exc
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    entries = [ln.strip() for ln in lines]
    return [_join(base, e) for e in entries if e and not e.startswith("#")]


def is_manifest(src: str) -> bool:
    return src.startswith("@") or src.lower().endswith(MANIFEST_SUFFIXES)


def is_glob(src: str) -> bool:
    return bool(GLOB_CHARS & set(src.split("://", 1)[-1]))


def identity(src: str) -> str:
    """What makes two spellings of a source the same file: the canonical absolute local path
    (symlinks resolved, `./` and `..` folded), or the URL without credentials and query."""
    if is_remote(src):
        url = public_url(src)
        scheme, _, rest = url.partition("://")
        return f"{scheme.lower()}://{posixpath.normpath(rest)}"
    return os.path.realpath(os.path.expanduser(src.removeprefix("file://")))


def expand_sources(sources: list[str], options: dict[str, Any] | None) -> list[str]:
    """Explicit URLs stay as given (a missing one fails its own file); globs and manifests expand.
    A file named twice (a glob and a manifest, a relative and an absolute path) is kept once."""
    out: dict[str, str] = {}
    for src in sources:
        if is_manifest(src):
            found = expand_sources(read_manifest(src.lstrip("@"), options), options)
        elif is_glob(src):
            fs, path = filesystem(src, options)
            try:
                matches = sorted(fs.glob(path))
            except Exception as exc:
                raise io_error(exc, src, "listing files") from exc
            if not matches:
                raise InputNotFound(f"{src}: no files match this pattern")
            found = [fs.unstrip_protocol(p) if is_remote(src) else p for p in matches]
        else:
            found = [src]
        for f in found:
            out.setdefault(identity(f), f)
    return list(out.values())


def count_local(sources: list[str]) -> int | None:
    """How many files local sources name (globs and manifests expanded), or None when any
    source is remote or unreadable: sizing a worker pool must not cost a listing."""
    if any(is_remote(s.lstrip("@")) for s in sources):
        return None
    try:
        return len(expand_sources(sources, None))
    except Exception:  # noqa: BLE001 - the flow reports bad sources properly
        return None


def stem(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if NUMBERED_SUFFIX.search(name):
        return name
    return name.rsplit(".", 1)[0] if "." in name else name


def output_url(prefix: str, source: str, extension: str) -> str:
    return prefix.rstrip("/") + "/" + stem(source) + extension
