"""Writing a stage's result: zarr into staging, then commit with its record (the marker).

No Prefect here. The per-file chain (`chain.py`) and the cross-file step (`reduce.py`)
both write through `save`, so every output is staged, committed and marked the same way.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel

from echoflow import __version__, storage
from echoflow.errors import EchoflowError, OutputError, one_line
from echoflow.recipes.plan import Job

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


# Storage encodings an input zarr leaves on variables; written again they clash with the
# writer's own (zarr 3: "Cannot specify both compressor and compressors") or with new chunks.
STORAGE_ENCODINGS = ("compressor", "compressors", "filters", "serializer", "chunks", "preferred_chunks", "shards")


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

    if not isinstance(result, xr.Dataset):  # EchoData: echopype's own writer
        for group in result.group_paths:
            if result[group] is not None:
                result[group] = clear_storage_encoding(result[group])
        result.to_zarr(str(staged), overwrite=True)
        return
    # One chunking per dimension (results mix inputs chunked differently), and regular
    # chunks (all equal but the last), which zarr needs; concatenations leave others.
    ds = clear_storage_encoding(result).unify_chunks()
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in ds.chunks.values()):
        ds = ds.chunk({d: max(c) for d, c in ds.chunks.items()})
    if ds.chunks or ds.nbytes > IN_MEMORY_BYTES:
        ds.to_zarr(str(staged), mode="w")  # streamed, chunk by chunk
    else:
        _write_small(ds, staged)


# A result in memory and at most this big (e.g. a file's MVBS, a few kB) is encoded into an
# in-memory zarr store, then written out file by file: zarr's writer to a local folder
# costs ~37 ms of CPU for an MVBS's eight arrays, whatever their size; this way ~22.
IN_MEMORY_BYTES = 16 * 2**20


def _write_small(ds: "xr.Dataset", staged: Path) -> None:
    import zarr

    objects: dict[str, Any] = {}
    ds.to_zarr(zarr.storage.MemoryStore(objects), mode="w")
    for key, buffer in objects.items():
        path = staged / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.to_bytes())


@lru_cache(maxsize=None)
def echopype_version() -> str:
    return version("echopype")  # reads the installed metadata: ~1 ms a call


def record(job: Job, **extra: Any) -> dict[str, Any]:
    """The marker's content; the commit adds the bytes and the manifest."""
    return {
        "stage": job.stage,
        "item": job.item,
        "fingerprint": job.fingerprint,
        "output": storage.public_url(job.output),
        "inputs": [storage.public_url(i) for i in job.inputs],
        "params": job.params,
        "echoflow_version": __version__,
        "echopype_version": echopype_version(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def save(result: "xr.Dataset | EchoData", job: Job, **extra: Any) -> int:
    """Stage, commit and mark one output; returns its size in bytes."""
    shown = storage.public_url(job.output)
    with storage.scratch_dir() as workdir:
        staged = storage.staging_path(job.output, workdir)
        try:
            write(result, staged)
        except EchoflowError:
            storage.discard(staged)
            raise
        except (OSError, ConnectionError) as exc:
            storage.discard(staged)
            raise storage.io_error(exc, job.output, f"writing {job.stage}") from exc
        except Exception as exc:
            storage.discard(staged)
            raise StageFailed(f"{job.stage} on {job.item}: cannot be written ({one_line(exc)})") from exc
        try:
            marker = storage.commit(staged, job.output, job.storage_options, record(job, **extra))
        except EchoflowError:
            raise
        except Exception as exc:
            raise OutputError(f"{shown}: cannot be written ({one_line(exc)})") from exc
        finally:
            storage.discard(staged)
    return int(marker["bytes"])
