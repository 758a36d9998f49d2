"""Conversion of one raw file with echopype: open → provenance → write → commit.

No Prefect here: the flows wrap these functions in tasks, and tests call them directly.
"""

from __future__ import annotations

import gc
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from echoflow import __version__, integrity, storage
from echoflow._echopype import load
from echoflow.errors import EchoflowError, RawFileError, one_line
from echoflow.params import EXTENSIONS, ConvertRequest
from echoflow.report import FileResult, Status

if TYPE_CHECKING:
    from echopype.echodata import EchoData


def resolve_output(req: ConvertRequest) -> str:
    """`output_path` may name the output itself (ends in .nc/.zarr) or a folder/prefix for it."""
    ext = EXTENSIONS[req.output_type]
    if req.output_path.rstrip("/").endswith(ext):
        return req.output_path.rstrip("/")
    return storage.output_url(req.output_path, req.raw_file, ext)


def provenance(req: ConvertRequest) -> dict[str, Any]:
    echopype = load()

    return {
        "echoflow_source_url": storage.public_url(req.raw_file),
        "echoflow_sonar_model": req.sonar_model,
        "echoflow_version": __version__,
        "echoflow_echopype_version": echopype.__version__,
        "echoflow_conversion_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def open_raw(req: ConvertRequest, workdir: Path, stamp: bool = True) -> "EchoData":
    """Fetch the raw (and XML) file, check its structure, parse it with echopype; with
    `stamp`, record echoflow's provenance in it (only worth it when it will be written:
    each group set back costs the EchoData a copy)."""
    echopype = load()

    raw = storage.fetch(req.raw_file, req.input_storage_options, workdir)
    xml = storage.fetch(req.xml_path, req.input_storage_options, workdir) if req.xml_path else None
    where = storage.shown(req.raw_file)
    try:
        integrity.check_raw(raw, req.sonar_model)
    except RawFileError as exc:
        raise RawFileError(str(exc).replace(raw, where, 1)) from None
    if xml and req.sonar_model == "AZFP":
        integrity.check_azfp_xml(xml, storage.shown(req.xml_path or xml))
    try:
        ed = echopype.open_raw(raw, sonar_model=req.sonar_model, xml_path=xml, convert_params=req.convert_params)
    except EchoflowError:
        raise
    except Exception as exc:
        raise RawFileError(
            f"{where}: cannot be read as {req.sonar_model} data ({one_line(exc)}); "
            f"check --sonar-model and that the file is complete"
        ) from exc
    beam = ed["Sonar/Beam_group1"]
    if beam is None or beam.sizes.get("ping_time", 0) == 0:
        raise RawFileError(f"{where}: holds no pings; the file is empty or not {req.sonar_model} data")
    if stamp:
        _stamp(ed, req, {raw: req.raw_file, xml: req.xml_path})
    return ed


def _stamp(ed: "EchoData", req: ConvertRequest, fetched: dict[Optional[str], Optional[str]]) -> None:
    record = provenance(req)
    for group in ("Top-level", "Provenance"):
        ds = ed[group]  # a copy: echopype hands out datasets, so set it back
        ds.attrs.update(record)
        if group == "Provenance":
            _name_true_sources(ds, fetched)
        ed[group] = ds


def _name_true_sources(ds: Any, fetched: dict[Optional[str], Optional[str]]) -> None:
    """echopype records the paths it parsed; for downloaded files those are scratch copies,
    so put back the URLs they came from (without credentials)."""
    swap = {local: storage.public_url(url) for local, url in fetched.items() if local and url and local != url}
    for name in [v for v in ds.data_vars if str(v).endswith("source_filenames")]:
        values = [swap.get(str(v), str(v)) for v in ds[name].values]
        ds[name] = ds[name].copy(data=values)


def save(
    ed: "EchoData", req: ConvertRequest, writer: storage.OutputWriter, run_id: Optional[str] = None
) -> tuple[str, int]:
    """Write the converted data to the writer's staging path and commit it; (output, bytes)."""
    output = writer.output
    try:
        with warnings.catch_warnings():
            # zarr 3 warns on every string array echopype writes; nothing a user can act on.
            warnings.filterwarnings("ignore", module=r"zarr\..*")
            if req.output_type == "zarr":
                ed.to_zarr(str(writer.staged), overwrite=True)
            else:
                ed.to_netcdf(str(writer.staged), overwrite=True)
    except Exception as exc:
        err = storage.io_error(exc, output, "writing the converted data", written=writer.staged)
        storage.discard(writer.staged)
        raise err from exc
    record = {
        **{k.removeprefix("echoflow_"): v for k, v in ed["Provenance"].attrs.items() if k.startswith("echoflow_")},
        "output": storage.public_url(output),
        "output_type": req.output_type,
        **({"run": run_id} if run_id else {}),
    }
    marker = writer.commit(record)
    return output, marker["bytes"]


def existing(req: ConvertRequest) -> Optional[dict[str, Any]]:
    """The completion record of this request's output when it is complete and may be kept."""
    if req.overwrite:
        return None
    return storage.read_marker(resolve_output(req), req.output_storage_options)


def convert_file(
    req: ConvertRequest, on_wait: Optional[Callable[[str], None]] = None, run_id: Optional[str] = None
) -> FileResult:
    """Convert one file end to end as the output's only writer; errors are raised, not
    swallowed (the caller records them). A complete output is skipped; one that another
    writer is producing is waited for, then skipped when that writer completed it.
    `run_id`, recorded in the marker, lets a retry whose earlier attempt committed the
    output before its worker died report it converted, not "already complete"."""
    start = time.perf_counter()
    source = storage.public_url(req.raw_file)
    output = resolve_output(req)

    def from_record(record: dict[str, Any], note: Optional[str] = None, status: Status = "skipped") -> FileResult:
        return FileResult(
            source=source,
            status=status,
            output=storage.public_url(output),
            bytes=record.get("bytes"),
            seconds=round(time.perf_counter() - start, 3),
            note=note,
        )

    storage.check_output_name(output)
    done = existing(req)
    if done is not None and run_id and done.get("run") == run_id:
        return from_record(
            done, "committed by an earlier attempt of this run, which did not live to report it", "converted"
        )
    if done is not None:
        return from_record(done)
    with (
        storage.scratch_dir() as workdir,
        storage.OutputWriter(output, req.output_storage_options, workdir, req.overwrite, on_wait) as writer,
    ):
        if writer.existing is not None:
            return from_record(writer.existing, f"completed meanwhile by {writer.waited_for or 'another writer'}")
        ed = open_raw(req, workdir)
        try:
            output, nbytes = save(ed, req, writer, run_id)
        finally:
            del ed
            gc.collect()  # EchoData holds large arrays; free them before the next file
    note = f"waited for {writer.waited_for}" if writer.waited_for else None
    return FileResult(
        source=source,
        status="converted",
        output=storage.public_url(output),
        bytes=nbytes,
        seconds=round(time.perf_counter() - start, 3),
        note=note,
    )
