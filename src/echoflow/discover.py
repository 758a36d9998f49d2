"""Find the raw files of a ship / cruise / instrument in an archive, within a time window.

Archives such as NOAA NCEI's water-column archive lay raw files out as
`<root>/<ship>/<cruise>/<instrument>/<prefix>-DYYYYMMDD-THHMMSS.raw`; the file's start
time is only in its name, so the window is applied to names, without opening any file:
a file is taken to last until the next one starts, and is kept when that span overlaps
the window (so the file already recording when the window opens is not lost).
Files whose name holds no time cannot be placed in a window: they are reported apart,
never silently dropped. Only `write_manifest` writes (the list, when asked).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import BaseModel

from echoflow import storage
from echoflow.errors import InputNotFound

# Simrad (EK60, EK80, ...): <prefix>-D20180211-T164025.raw
SIMRAD_TIME = re.compile(r"D(\d{8})-T(\d{6})")
# ASL AZFP: YYMMDDHH.NNX (e.g. 17031001.01A = 2017-03-10 01:00)
AZFP_TIME = re.compile(r"^(\d{8})\.\d{2}[A-Za-z]$")

DEFAULT_PATTERNS = {"AZFP": "*.[0-9][0-9][A-Za-z]", "AD2CP": "*.ad2cp"}
SIMRAD_PATTERN = "*.raw"


def default_pattern(sonar_model: Optional[str]) -> str:
    return DEFAULT_PATTERNS.get((sonar_model or "").upper(), SIMRAD_PATTERN)


def file_time(name: str) -> Optional[datetime]:
    """Start time written in a raw file's name (UTC, naive), or None when there is none."""
    base = posixpath.basename(name.rstrip("/"))
    m = SIMRAD_TIME.search(base)
    try:
        if m:
            return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
        m = AZFP_TIME.match(base)
        if m:
            return datetime.strptime(m.group(1), "%y%m%d%H")
    except ValueError:  # e.g. D20181341: digits that are no date
        return None
    return None


def as_utc(t: datetime) -> datetime:
    """Naive UTC: file names carry UTC times; aware inputs are converted."""
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


class RawFile(BaseModel):
    url: str
    name: str
    bytes: int
    time: Optional[datetime] = None


class Listing(BaseModel):
    """What a folder holds for a window: files to process, files left out and why."""

    folder: str
    pattern: str
    start: Optional[datetime] = None
    end: Optional[datetime] = None
    selected: list[RawFile]
    undated: list[RawFile]  # no time in the name: cannot be placed in the window
    outside: int  # dated files outside the window

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.selected)

    def headline(self) -> str:
        text = f"{len(self.selected)} files, {self.total_bytes} bytes ({self.total_bytes / 1e6:.1f} MB)"
        if self.start or self.end:
            text += f" in [{self.start or '...'}, {self.end or '...'})"
        if self.outside:
            text += f"; {self.outside} outside the window"
        if self.undated:
            text += f"; {len(self.undated)} without a time in the name, left out"
        return text


def overlaps(
    begins: datetime, next_begins: Optional[datetime], start: Optional[datetime], end: Optional[datetime]
) -> bool:
    """A file that begins at `begins` and lasts until `next_begins` (unknown for the last
    file) has data in [start, end)."""
    if end is not None and begins >= end:
        return False
    return start is None or next_begins is None or next_begins > start


def write_manifest(listing: "Listing", path: str) -> int:
    """The selected files, one URL a line: what `echoflow convert @FILE` reads."""
    from pathlib import Path

    lines = [f"# {listing.folder} ({listing.pattern}): {listing.headline()}"] + [f.url for f in listing.selected]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(target)  # a reader never sees half a list
    return len(listing.selected)


def archive_folder(root: str, ship: str, cruise: str, instrument: str) -> str:
    """The NCEI layout: <root>/<ship>/<cruise>/<instrument>."""
    return "/".join([root.rstrip("/"), ship.strip("/"), cruise.strip("/"), instrument.strip("/")])


def list_raw(
    folder: str,
    pattern: str = SIMRAD_PATTERN,
    storage_options: dict[str, Any] | None = None,
    start: Optional[datetime] = None,
    end: Optional[datetime] = None,
) -> Listing:
    """Files of `folder` (not recursive) matching `pattern`, split by the window [start, end)."""
    start = as_utc(start) if start else None
    end = as_utc(end) if end else None
    fs, path = storage.filesystem(folder, storage_options)
    try:
        entries = fs.ls(path.rstrip("/"), detail=True)
    except FileNotFoundError:
        raise InputNotFound(
            f"{storage.shown(folder)}: no such folder; check the ship, cruise and "
            "instrument names (they are case-sensitive)"
        ) from None
    except Exception as exc:
        raise storage.io_error(exc, folder, "listing files") from exc
    files: list[RawFile] = []
    for e in entries:
        name = posixpath.basename(e["name"].rstrip("/"))
        if e.get("type") != "file" or not fnmatch.fnmatchcase(name, pattern):
            continue
        url = fs.unstrip_protocol(e["name"]) if storage.is_remote(folder) else e["name"]
        files.append(RawFile(url=url, name=name, bytes=int(e.get("size") or 0), time=file_time(name)))
    selected: list[RawFile] = []
    undated: list[RawFile] = []
    outside = 0
    ordered = sorted(files, key=lambda f: (f.time or datetime.max, f.name))
    dated = [f for f in ordered if f.time is not None]
    # A file runs until the next one starts: it overlaps [start, end) when it starts
    # before the end and the next file starts after the window's start.
    next_start = {id(f): n.time for f, n in zip(dated, dated[1:])}
    for f in ordered:
        if f.time is None:
            (undated if start or end else selected).append(f)
        elif overlaps(f.time, next_start.get(id(f)), start, end):
            selected.append(f)
        else:
            outside += 1
    return Listing(
        folder=storage.shown(folder),
        pattern=pattern,
        start=start,
        end=end,
        selected=selected,
        undated=undated,
        outside=outside,
    )
