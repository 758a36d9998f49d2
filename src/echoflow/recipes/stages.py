"""One stage on one item, with echopype: read inputs by path, compute, write zarr, commit.

No Prefect here (the flow wraps `run_job` in a task). The echopype call of each stage is
the function of the same name with the recipe's parameters, so a stage's output is what
echopype gives on the same input; what echoflow adds is where it is read and written.
"""

from __future__ import annotations

import gc
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel

from echoflow import __version__, storage
from echoflow._echopype import load
from echoflow.errors import EchoflowError, OutputError, one_line
from echoflow.recipes.plan import Job, is_complete

if TYPE_CHECKING:
    import xarray as xr
    from echopype.echodata import EchoData


class StageResult(BaseModel):
    stage: str
    item: str
    status: Literal["computed", "skipped", "converted", "failed"]
    output: str
    bytes: Optional[int] = None
    seconds: Optional[float] = None
    error: Optional[str] = None


class StageFailed(EchoflowError):
    """echopype rejected a stage's input or parameters (not retried)."""


def open_echodata(path: str, options: dict[str, Any]) -> "EchoData":
    return load().open_converted(path, storage_options=options or {})


def open_dataset(path: str, options: dict[str, Any]) -> "xr.Dataset":
    import xarray as xr

    return xr.open_zarr(path, storage_options=options or None)


def compute(job: Job) -> "xr.Dataset | EchoData":
    """The echopype function of `job.stage` on the job's inputs."""
    ep = load()

    opts, p = job.storage_options, job.params
    if job.stage == "combine_echodata":
        return ep.combine_echodata([open_echodata(i, opts) for i in job.inputs], **p)
    if job.stage == "compute_Sv":
        return ep.calibrate.compute_Sv(open_echodata(job.inputs[0], opts), **p)
    if job.stage == "compute_MVBS":
        return ep.commongrid.compute_MVBS(open_dataset(job.inputs[0], opts), **p)
    if job.stage == "compute_NASC":
        return ep.commongrid.compute_NASC(open_dataset(job.inputs[0], opts), **p)
    if job.stage in ("add_depth", "add_location"):
        fn = getattr(ep.consolidate, job.stage)
        return fn(open_dataset(job.inputs[0], opts), open_echodata(job.echodata, opts), **p)
    raise ValueError(f"no echopype function for stage {job.stage}")


# Storage encodings an input zarr leaves on variables; written again they clash with the
# writer's own (zarr 3: "Cannot specify both compressor and compressors") or with new chunks.
STORAGE_ENCODINGS = ("compressor", "compressors", "filters", "serializer", "chunks",
                     "preferred_chunks", "shards")


def clear_storage_encoding(ds: "xr.Dataset") -> "xr.Dataset":
    ds = ds.copy()
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k not in STORAGE_ENCODINGS}
    return ds


def write(result: "xr.Dataset | EchoData", staged: Path) -> None:
    with warnings.catch_warnings():
        # zarr 3 warns on every string array; nothing a user can act on.
        warnings.filterwarnings("ignore", module=r"zarr\..*")
        _write(result, staged)


def _write(result: "xr.Dataset | EchoData", staged: Path) -> None:
    import xarray as xr

    if not isinstance(result, xr.Dataset):  # EchoData (combine): echopype's own writer
        for group in result.group_paths:
            if result[group] is not None:
                result[group] = clear_storage_encoding(result[group])
        result.to_zarr(str(staged), overwrite=True)
        return
    # One chunking per dimension (results mix inputs chunked differently), and regular
    # chunks (all equal but the last), which zarr needs; group-bys can leave others.
    ds = clear_storage_encoding(result).unify_chunks()
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in ds.chunks.values()):
        ds = ds.chunk({d: max(c) for d, c in ds.chunks.items()})
    ds.to_zarr(str(staged), mode="w")


def record(job: Job, nbytes: int) -> dict[str, Any]:
    echopype = load()
    return {"stage": job.stage, "item": job.item, "fingerprint": job.fingerprint,
            "output": storage.public_url(job.output), "inputs": [storage.public_url(i) for i in job.inputs],
            "echodata": storage.public_url(job.echodata) if job.echodata else None,
            "params": job.params, "bytes": nbytes, "echoflow_version": __version__,
            "echopype_version": echopype.__version__,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_job(job: Job, overwrite: bool = False) -> StageResult:
    """Compute one stage output unless a complete one made from the same inputs exists."""
    start = time.perf_counter()
    shown = storage.public_url(job.output)
    if not overwrite and is_complete(job):
        return StageResult(stage=job.stage, item=job.item, status="skipped", output=shown,
                           seconds=round(time.perf_counter() - start, 3))
    with storage.scratch_dir() as workdir:
        staged = storage.staging_path(job.output, workdir)
        try:
            result = compute(job)
            write(result, staged)
        except EchoflowError:
            storage.discard(staged)
            raise
        except (OSError, ConnectionError) as exc:
            storage.discard(staged)
            raise storage.io_error(exc, job.output, f"running {job.stage}") from exc
        except Exception as exc:
            storage.discard(staged)
            raise StageFailed(f"{job.stage} on {job.item}: echopype failed ({one_line(exc)})") from exc
        finally:
            result = None
            if job.stage not in ("compute_MVBS", "compute_NASC"):
                gc.collect()  # EchoData holds large arrays in cycles; free them before the next job
        nbytes = storage.size_of(staged)
        try:
            storage.commit(staged, job.output, job.storage_options, record(job, nbytes))
        except EchoflowError:
            raise
        except Exception as exc:
            raise OutputError(f"{shown}: cannot be written ({one_line(exc)})") from exc
        finally:
            storage.discard(staged)
    return StageResult(stage=job.stage, item=job.item, status="computed", output=shown, bytes=nbytes,
                       seconds=round(time.perf_counter() - start, 3))
