"""Cross-file outputs of a group, made from its files' outputs, read lazily.

Each per-file output is opened with xarray (dask arrays, nothing loaded) and joined along
ping_time; writing the result then streams it chunk by chunk, so memory follows the chunk
size, not the number of files.

- MVBS: per-file MVBS share compute_MVBS's grid (range bins from 0, time bins counted from
  midnight), so the group's MVBS is their concatenation, except where two files share a
  time bin: there the bin is merged from both files' means weighted by the number of Sv
  samples behind each (`sample_count`), which is what compute_MVBS on the joined Sv gives.
  Empty time bins between files are added, as compute_MVBS adds them.
- Sv, add_depth, add_location: the per-file datasets joined along ping_time.
- NASC: distance runs across files, so echopype's compute_NASC runs on the joined input.
- combine_echodata: echopype's combine_echodata of the converted files.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from echoflow import storage
from echoflow.errors import EchoflowError, one_line
from echoflow.recipes.plan import COMBINE, Job
from echoflow.recipes.stages import StageFailed, StageResult, save

COUNTS = {"sample_count": 0, "ping_count": 0}
POSITIONS = ("latitude", "longitude")


def join(parts: list[Any]) -> Any:
    import xarray as xr

    return xr.concat(
        parts,
        dim="ping_time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="outer",
        fill_value={**{v: float("nan") for p in parts[:1] for v in p.data_vars}, **COUNTS},
        combine_attrs="override",
    )


def merge_bin(holders: list[Any]) -> Any:
    """One time bin present in several files: Sv from summed linear sv and sample counts."""
    import numpy as np
    import xarray as xr

    holders = list(xr.align(*holders, join="outer", fill_value={"Sv": np.nan, **COUNTS}))
    n = sum(h["sample_count"].astype("float64") for h in holders)
    lin = sum((10 ** (h["Sv"] / 10) * h["sample_count"]).fillna(0) for h in holders)
    out = holders[0].copy()
    out["Sv"] = (10 * np.log10(lin / n)).where(n > 0)
    out["sample_count"] = n.astype("uint32")
    pings = sum(h["ping_count"].astype("float64") for h in holders)
    for v in POSITIONS:
        if v in out:
            total = sum((h[v] * h["ping_count"]).fillna(0) for h in holders)
            weight = sum(h["ping_count"].where(h[v].notnull(), 0) for h in holders)
            out[v] = (total / weight).where(weight > 0)
    out["ping_count"] = pings.astype("uint32")
    return out


def merge_mvbs(parts: list[Any], ping_time_bin: str, names: list[str]) -> Any:
    import pandas as pd

    times = [pd.DatetimeIndex(p["ping_time"].values) for p in parts]
    shared = {t for t, n in Counter(t for ts in times for t in ts).items() if n > 1}
    for name, ts in zip(names, times):
        if any(t in shared for t in ts[1:-1]):
            other = next(n for n, o in zip(names, times) if n != name and set(o) & set(ts[1:-1]))
            raise StageFailed(
                f"{storage.shown(name)} and {storage.shown(other)} hold pings of the same "
                "time; one file's MVBS cannot be merged into the other's (remove the duplicate)"
            )
    merged = [merge_bin([p.sel(ping_time=[t]) for p, ts in zip(parts, times) if t in ts]) for t in sorted(shared)]
    body = [p.drop_sel(ping_time=[t for t in ts if t in shared]) for p, ts in zip(parts, times)]
    out = join([b for b in body if b.sizes["ping_time"]] + merged).sortby("ping_time")
    grid = pd.date_range(out["ping_time"].values[0], out["ping_time"].values[-1], freq=ping_time_bin)
    fill = {**{v: float("nan") for v in out.data_vars}, **COUNTS}
    return out.reindex(ping_time=grid, fill_value=fill)


def open_parts(job: Job) -> tuple[list[Any], list[str]]:
    """The per-file outputs, opened lazily, in time order, with their paths."""
    import xarray as xr

    parts = [(xr.open_zarr(p, storage_options=job.storage_options or None), p) for p in job.inputs]
    parts.sort(key=lambda pair: pair[0]["ping_time"].values[0])
    return [p for p, _ in parts], [n for _, n in parts]


def compute(job: Job) -> Any:
    from echoflow._echopype import load

    if job.stage == COMBINE:
        ep = load()
        eds = [ep.open_converted(p, storage_options=job.storage_options or {}) for p in job.inputs]
        return ep.combine_echodata(eds, **job.params)
    parts, names = open_parts(job)
    if job.stage == "compute_MVBS":  # xarray only: no echopype import where this runs
        return merge_mvbs(parts, job.params.get("ping_time_bin", "20s"), names)
    if job.stage == "compute_NASC":
        return load().commongrid.compute_NASC(join(parts), **job.params)
    return join(parts)


def run_reduce(job: Job) -> StageResult:
    """Make and commit one group output (the caller skips complete ones)."""
    start = time.perf_counter()
    try:
        result = compute(job)
    except EchoflowError:
        raise
    except (OSError, ConnectionError) as exc:
        raise storage.io_error(exc, job.output, f"reading the inputs of {job.stage}") from exc
    except Exception as exc:
        raise StageFailed(f"{job.stage} of group {job.item}: {one_line(exc)}") from exc
    nbytes = save(result, job, files=len(job.inputs))
    return StageResult(
        stage=job.stage,
        item=job.item,
        status="computed",
        output=storage.public_url(job.output),
        bytes=nbytes,
        seconds=round(time.perf_counter() - start, 3),
    )
