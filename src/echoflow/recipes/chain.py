"""One raw file through its stages, in a worker process, with the data in memory.

open_raw (echoflow's conversion: fetch, framing check, provenance) → compute_Sv →
add_depth / add_location → compute_MVBS / compute_NASC: each stage is the echopype
function of that name with the recipe's parameters, applied to the previous result in
memory. Only the outputs the plan names are written (staged, committed, marked); the rest
never leave the process. No Prefect here: the flow runs `run_chain` on its worker pool.
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel

from echoflow import convert, storage
from echoflow._echopype import load
from echoflow.errors import EchoflowError, one_line
from echoflow.params import ConvertRequest
from echoflow.recipes.plan import FileChain, Job
from echoflow.recipes.stages import StageFailed, StageResult, save

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr


class ChainResult(BaseModel):
    results: list[StageResult]
    first_ping: Optional[str] = None  # ISO times of the file's data, for grouping
    last_ping: Optional[str] = None


def bin_index(values: "np.ndarray", edges: "np.ndarray", closed: str) -> "np.ndarray":
    """Each value's bin among `edges` as pandas' IntervalIndex (what compute_MVBS bins by)
    places it: [a, b) when closed='left', (a, b] when 'right'; -1 outside or NaN/NaT."""
    import numpy as np

    i = np.searchsorted(edges, values, side="right" if closed == "left" else "left") - 1
    bad = (i < 0) | (i >= len(edges) - 1)
    if values.dtype.kind == "f":
        bad |= np.isnan(values)
    elif values.dtype.kind == "M":
        bad |= np.isnat(values)
    return np.where(bad, -1, i)


def sample_count(sv: "xr.Dataset", mvbs: "xr.Dataset", p: dict[str, Any]) -> "xr.Dataset":
    """MVBS with, per cell, how many Sv samples it averages and, per time bin, how many pings
    it holds: the weights that merge the bins two files share (see reduce.merge_mvbs).
    The bins are compute_MVBS's own: range from 0, ping_time from midnight (pandas resample).
    Counted with one bincount (a flox reduction per count cost ~30% of a file's chain)."""
    import numpy as np
    import pandas as pd

    range_var, closed = p.get("range_var", "echo_range"), p.get("closed", "left")
    size = float(str(p.get("range_bin", "20m")).strip().removesuffix("m"))
    ranges = np.arange(0, sv[range_var].max(skipna=True) + size, size)
    lefts = pd.DatetimeIndex(mvbs["ping_time"].values)
    pings = lefts.union([lefts[-1] + pd.Timedelta(p.get("ping_time_bin", "20s"))]).values
    dim0 = sv["Sv"].dims[0]
    dims = (dim0, "ping_time", *(d for d in sv["Sv"].dims if d not in (dim0, "ping_time")))
    n_ch, n_p, n_r = len(sv[dims[0]]), len(pings) - 1, len(ranges) - 1
    p_bin = bin_index(sv["ping_time"].values, pings, closed)
    r_bin = bin_index(sv[range_var].broadcast_like(sv["Sv"]).transpose(*dims).values, ranges, closed)
    cell = (np.arange(n_ch)[:, None, None] * n_p + p_bin[None, :, None]) * n_r + r_bin
    ok = (p_bin[None, :, None] >= 0) & (r_bin >= 0) & ~np.isnan(sv["Sv"].transpose(*dims).values)
    counts = np.bincount(cell[ok], minlength=n_ch * n_p * n_r).reshape(n_ch, n_p, n_r)
    per_ping = np.bincount(p_bin[p_bin >= 0], minlength=n_p)
    mvbs["sample_count"] = (
        (dims[0], "ping_time", range_var),
        counts.astype("uint32"),
        {"long_name": "Number of Sv samples averaged in the cell"},
    )
    mvbs["sample_count"] = mvbs["sample_count"].transpose(*mvbs["Sv"].dims)
    mvbs["ping_count"] = (
        ("ping_time",),
        per_ping.astype("uint32"),
        {"long_name": "Number of pings in the time bin"},
    )
    return mvbs


def compute(stage: str, params: dict[str, Any], data: Any, ed: Any) -> Any:
    ep = load()
    if stage == "compute_Sv":
        return ep.calibrate.compute_Sv(ed, **params)
    if stage == "compute_MVBS":
        return sample_count(data, ep.commongrid.compute_MVBS(data, **params), params)
    if stage == "compute_NASC":
        return ep.commongrid.compute_NASC(data, **params)
    if stage in ("add_depth", "add_location"):
        return getattr(ep.consolidate, stage)(data, ed, **params)
    raise ValueError(f"no echopype function for stage {stage}")


def _request(chain: FileChain) -> ConvertRequest:
    return ConvertRequest(
        raw_file=chain.source,
        sonar_model=chain.sonar_model,
        xml_path=chain.xml_path,
        convert_params=chain.steps[0].params.get("convert_params"),
        input_storage_options=chain.source_options,
        output_path=chain.steps[0].output or "-",
        output_type="zarr",
        output_storage_options=chain.output_options,
    )


def ping_span(ed: Any) -> tuple[Optional[str], Optional[str]]:
    t = ed["Sonar/Beam_group1"]["ping_time"].values
    return (str(t.min())[:26], str(t.max())[:26]) if len(t) else (None, None)


def run_chain(chain: FileChain, done: list[str]) -> ChainResult:
    """Compute the chain up to its last output not in `done` (complete outputs) and write
    those outputs. Raises on the first failure: the caller marks the file's outputs failed."""
    jobs = {j.output: j for j in chain.jobs()}
    last = max((i for i, s in enumerate(chain.steps) if s.output and s.output not in done), default=-1)
    results: list[StageResult] = []
    values: list[Any] = []
    span: tuple[Optional[str], Optional[str]] = (None, None)
    with storage.scratch_dir() as workdir:
        try:
            for i, step in enumerate(chain.steps[: last + 1]):
                start = time.perf_counter()
                if i == 0:
                    written = bool(step.output) and step.output not in done
                    values.append(convert.open_raw(_request(chain), workdir, stamp=written))
                    span = ping_span(values[0])
                else:
                    values.append(_compute(step.stage, step.params, values[step.input or 0], values[0], chain.item))
                if step.output in done or not step.output:
                    continue
                job = jobs[step.output]
                nbytes = save(values[i], job, first_ping=span[0], last_ping=span[1])
                results.append(
                    StageResult(
                        stage=step.stage,
                        item=chain.item,
                        output=storage.public_url(job.output),
                        status="converted" if i == 0 else "computed",
                        bytes=nbytes,
                        seconds=round(time.perf_counter() - start, 3),
                    )
                )
        finally:
            values.clear()
            gc.collect()  # EchoData holds large arrays in cycles; free them before the next file
    return ChainResult(results=results, first_ping=span[0], last_ping=span[1])


def _compute(stage: str, params: dict[str, Any], data: Any, ed: Any, item: str) -> Any:
    try:
        return compute(stage, params, data, ed)
    except EchoflowError:
        raise
    except (OSError, ConnectionError) as exc:
        raise storage.io_error(exc, item, f"running {stage}") from exc
    except Exception as exc:
        raise StageFailed(f"{stage} on {item}: echopype failed ({one_line(exc)})") from exc


def failed(job: Job, error: str) -> StageResult:
    return StageResult(
        stage=job.stage, item=job.item, status="failed", output=storage.public_url(job.output), error=error
    )
