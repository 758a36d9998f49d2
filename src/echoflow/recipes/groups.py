"""Groups of files for the cross-file stages: a transect schedule, or pauses in the data.

Grouping uses the data's own times (first and last ping of each file, recorded in the
per-file outputs' markers), not file names: a schedule puts a file in the transect that
holds its first ping; with `gap`, a new group starts where the time from one file's last
ping to the next file's first ping is longer than the gap.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any, Optional

from pydantic import BaseModel

from echoflow import storage
from echoflow.errors import ParameterError
from echoflow.recipes.model import Recipe


class Transect(BaseModel):
    name: str
    start: datetime
    end: datetime


class Group(BaseModel):
    name: str
    items: list[str]


class Span(BaseModel):
    """A file's data in time (naive UTC)."""

    item: str
    first: datetime
    last: datetime


def _time(text: str, where: str) -> datetime:
    from echoflow.discover import as_utc

    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ParameterError(f"{where}: {text!r} is not a date-time; expected e.g. 2018-02-11T16:40:00") from None


def read_schedule(url: str, options: Optional[dict[str, Any]] = None) -> list[Transect]:
    """Transects from a CSV of name,start,end (a header line is optional; '#' lines are comments)."""
    import fsspec

    try:
        with fsspec.open(url, "rt", **(options or {})) as f:
            text = f.read()
    except Exception as exc:
        raise storage.io_error(exc, url, "reading the transect schedule") from exc
    shown = storage.shown(url)
    out: list[Transect] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if n == 1 and row[0].strip().lower() == "name":
            continue
        if len(row) != 3:
            raise ParameterError(f"{shown}:{n}: expected 3 columns name,start,end, got {len(row)}")
        name = row[0].strip()
        t = Transect(name=name, start=_time(row[1], f"{shown}:{n}"), end=_time(row[2], f"{shown}:{n}"))
        if t.end <= t.start:
            raise ParameterError(f"{shown}:{n}: transect {name!r} ends before it starts")
        if not name or any(c in name for c in "/\\ "):
            raise ParameterError(f"{shown}:{n}: {name!r} is not a usable transect name")
        out.append(t)
    if not out:
        raise ParameterError(f"{shown}: the transect schedule lists no transect")
    return out


def make_groups(recipe: Recipe, spans: list[Span]) -> tuple[list[Group], list[str]]:
    """(groups in time order, items that fall in no transect)."""
    spans = sorted(spans, key=lambda s: s.first)
    g = recipe.groups
    if g is None:
        return ([Group(name=recipe.name, items=[s.item for s in spans])] if spans else []), []
    if g.schedule:
        transects = read_schedule(g.schedule, recipe.source.storage_options)
        by_name = {t.name: Group(name=t.name, items=[]) for t in transects}
        outside = []
        for s in spans:
            t = next((t for t in transects if t.start <= s.first < t.end), None)
            if t is None:
                outside.append(s.item)
            else:
                by_name[t.name].items.append(s.item)
        return [grp for grp in by_name.values() if grp.items], outside
    import pandas as pd

    gap = pd.Timedelta(g.gap).to_pytimedelta()
    groups: list[Group] = []
    last: Optional[datetime] = None
    for s in spans:
        if last is None or s.first - last > gap:
            groups.append(Group(name=f"{recipe.name}-D{s.first:%Y%m%d}-T{s.first:%H%M%S}", items=[]))
        groups[-1].items.append(s.item)
        last = s.last if last is None else max(last, s.last)
    return groups, []
