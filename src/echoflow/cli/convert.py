"""`echoflow convert`: the batch flow on the embedded default, with progress and a summary."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from echoflow.cli.common import err, fail, io_options, out
from echoflow.errors import one_line

if TYPE_CHECKING:
    from echoflow.workers import Workers


def convert(
    sources: List[str] = typer.Argument(..., help="Raw files, globs, s3:// or https:// URLs, or @manifest.txt"),
    sonar_model: str = typer.Option(..., "--sonar-model", "-m", help="EK60, EK80, AZFP, AD2CP, …"),
    out_prefix: str = typer.Option(..., "--out", "-o", help="Output folder or s3:// prefix"),
    output_type: str = typer.Option("netcdf", "--format", "-f", help="zarr or netcdf"),
    xml: Optional[str] = typer.Option(None, "--xml", help="Instrument XML (AZFP)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reconvert complete outputs"),
    concurrency: int = typer.Option(0, "--concurrency", "-j", min=0, help="Worker processes (0: one per CPU)"),
    anon: bool = typer.Option(False, "--anon", help="Read inputs anonymously (public buckets)"),
    input_option: List[str] = typer.Option([], "--input-option", help="fsspec option for inputs, KEY=VALUE"),
    output_option: List[str] = typer.Option([], "--output-option", help="fsspec option for outputs, KEY=VALUE"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's run logs and library warnings"),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON document (per-file status, output, bytes, seconds, error) instead of the table",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or table: failures and exit code only"),
) -> None:
    """Convert raw files with the batch flow; no server needed (embedded Prefect API)."""
    from echoflow.display import LibraryOutput
    from echoflow.storage import count_local
    from echoflow.workers import Workers, available_cpus, yield_to_workers

    # echopype takes seconds to import: worker processes load it while this process starts
    # Prefect, so this process never imports it. As many as the work needs: min(files, CPUs,
    # --jobs), the files counted when that is cheap (local paths, globs and manifests).
    files = count_local(sources)
    workers = max(1, min(concurrency or available_cpus(), files or available_cpus()))
    library = LibraryOutput(not verbose, (err,)).__enter__()  # workers' library warnings: to the run log
    pool = Workers(workers)
    pool.__enter__()
    yield_to_workers()  # the conversions come first on a busy machine
    try:
        _convert(
            pool,
            sources=sources,
            sonar_model=sonar_model,
            out_prefix=out_prefix,
            output_type=output_type,
            xml=xml,
            overwrite=overwrite,
            concurrency=concurrency,
            anon=anon,
            input_option=input_option,
            output_option=output_option,
            verbose=verbose,
            json_out=json_out,
            quiet=quiet,
        )
    finally:
        pool.__exit__(None, None, None)
        library.__exit__(None, None, None)


def _convert(
    pool: Workers,
    *,
    sources: List[str],
    sonar_model: str,
    out_prefix: str,
    output_type: str,
    xml: Optional[str],
    overwrite: bool,
    concurrency: int,
    anon: bool,
    input_option: List[str],
    output_option: List[str],
    verbose: bool,
    json_out: bool = False,
    quiet: bool = False,
) -> None:
    from echoflow import display, runtime
    from echoflow.home import foreground_run, use_embedded_default

    if not verbose:  # read once, at Prefect's import
        os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "CRITICAL")
    where = use_embedded_default(quiet=not verbose)
    if not (quiet or json_out):
        err.print(f"[dim]runs recorded in: {where}[/]", highlight=False, soft_wrap=True)
    if not verbose:
        display.libraries_to_run_log(load_echopype=False)  # this process never imports echopype
    from echoflow.flows.batch import convert_batch
    from echoflow.params import BatchRequest
    from echoflow.report import Summary

    if not verbose:
        quiet_prefect_internals()  # after Prefect's import, which sets its loggers' levels
    params: dict[str, Any] = dict(
        sources=sources,
        sonar_model=sonar_model,
        output_prefix=out_prefix,
        output_type=output_type,
        xml_path=xml,
        concurrency=concurrency,
        overwrite=overwrite,
        **io_options(input_option, output_option, anon),
    )
    with runtime.entered(workers=pool):
        BatchRequest(**params)  # the flow checks again; this gives a clean one-line error first

    with display.Reporter(err, "converting", enabled=not (quiet or json_out)) as bar:
        counts = {"total": -1, "done": 0}

        def on_event(kind: str, value: Any) -> None:
            if kind == "total":
                counts["total"] = value
                bar.set_total(value)
                return
            counts["done"] += 1
            bar.advance(Path(value.source).name, failed=value.status == "failed")
            if counts["done"] == counts["total"]:
                pool.release()  # every file is done: the workers exit while Prefect wraps up

        seen: list[Any] = []

        def keep(kind: str, value: Any) -> None:
            if kind == "file":
                seen.append(value)

        try:
            with runtime.entered(workers=pool, listeners=(keep, on_event)), foreground_run():
                state = convert_batch(**params, return_state=True)
            display.note_run(state)
            result = state.result(raise_on_failure=False)
        except Exception as exc:  # noqa: BLE001 - the API failed us; the files' own results stand
            result = api_lost(seen, counts["total"], where, exc)
    if isinstance(result, BaseException):
        fail(one_line(result))
    summary = Summary.model_validate(result)
    if json_out:
        display.print_json(display.summary_json(summary, out_prefix, where))
    elif quiet:
        display.print_errors(err, [f.error for f in summary.files if f.error])
    else:
        display.print_summary(out, summary, out_prefix)
    raise typer.Exit(summary.exit_code())


def quiet_prefect_internals() -> None:
    """Prefect's log service prints a raw '--- Error logging to API ---' when the API goes
    away (its other services obey PREFECT_LOGGING_INTERNAL_LEVEL); the CLI says it once."""
    logging.raiseExceptions = False


def api_lost(seen: list[Any], total: int, where: str, exc: BaseException) -> Any:
    """The Prefect API went away mid-run: when every file reported, their results are the
    summary (one line says the run's record is incomplete); otherwise fail with one line."""
    from echoflow.report import Summary

    if total < 0 or len(seen) < total:
        fail(
            f"lost the Prefect API at {where} during the run ({one_line(exc)[:200]}); "
            "files already converted are complete, run again to finish the rest"
        )
    quiet_prefect_internals()  # its event and log services retry in the background until exit
    err.print(
        f"[yellow]warning:[/] the run's record could not be written to {where} "
        f"({one_line(exc)[:200]}); the files below are as converted",
        highlight=False,
        soft_wrap=True,
    )
    return Summary(files=seen).model_dump()
