"""`convert_raw_sonar`: one raw file to zarr / netCDF, in two tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from prefect import task

from echoflow import convert, storage
from echoflow.flows.arguments import documented, request
from echoflow.flows.common import TASK_OPTIONS, run_logger, warn_on_credentials
from echoflow.flows.runs import convert_run_name, echoflow_flow, short
from echoflow.params import ConvertRequest, OutputType

if TYPE_CHECKING:
    from echopype.echodata import EchoData


@task(
    name="Open Raw File",
    task_run_name=lambda parameters: f"open {short(parameters['req'].raw_file)}",  # type: ignore[arg-type]
    **TASK_OPTIONS,
)
def open_raw_file(req: ConvertRequest) -> "EchoData":
    log = run_logger()
    log.info("Opening %s as %s", storage.shown(req.raw_file), req.sonar_model)
    with storage.scratch_dir() as workdir:
        ed = convert.open_raw(req, workdir)
    beam = ed["Sonar/Beam_group1"]
    log.info(
        "Opened %s: %d channels, %d pings",
        storage.shown(req.raw_file),
        beam.sizes.get("channel", 0),
        beam.sizes.get("ping_time", 0),
    )
    return ed


@task(
    name="Save Converted File",
    task_run_name=lambda parameters: f"save {short(parameters['req'].raw_file)}",  # type: ignore[arg-type]
    **TASK_OPTIONS,
)
def save_converted_file(ed: "EchoData", req: ConvertRequest) -> str:
    log = run_logger()
    log.info(
        "Saving %s as %s to %s",
        storage.shown(req.raw_file),
        req.output_type,
        storage.shown(convert.resolve_output(req)),
    )
    output = convert.resolve_output(req)
    with (
        storage.scratch_dir() as workdir,
        storage.OutputWriter(
            output,
            req.output_storage_options,
            workdir,
            req.overwrite,
            on_wait=lambda who: log.info("waiting for %s, which is writing %s", who, storage.shown(output)),
        ) as w,
    ):
        if w.existing is not None:
            log.info("%s was completed by %s meanwhile; kept", storage.shown(output), w.waited_for)
            return output
        output, nbytes = convert.save(ed, req, w)
    log.info("Saved %s (%d bytes)", storage.shown(output), nbytes)
    return output


@echoflow_flow(name="convert-raw-sonar", flow_run_name=convert_run_name, log_prints=True)
@documented()
def convert_raw_sonar(
    raw_file: str,
    sonar_model: str,
    xml_path: Optional[str] = None,
    convert_params: Optional[dict[str, Any]] = None,
    input_storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated; the API's documented default
    *,
    output_path: str,
    output_type: OutputType = "netcdf",
    overwrite: bool = False,
    output_storage_options: dict[str, Any] = {},  # noqa: B006
) -> str:
    """Convert one raw echosounder file with echopype; returns the converted file's path.

    A complete output is kept unless `overwrite` is set.
    """
    req = request(ConvertRequest, locals())
    warn_on_credentials(input_storage_options, output_storage_options)
    done = convert.existing(req)
    if done is not None:
        run_logger().info("%s is complete (converted %s); skipping", done.get("output"), done.get("conversion_time"))
        return convert.resolve_output(req)
    ed = open_raw_file(req)
    return save_converted_file(ed, req)
