"""The `echoflow` command: thin — parse, call a flow, print."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from echoflow import __version__
from echoflow.errors import EchoflowError, one_line

if TYPE_CHECKING:
    from echoflow.workers import Workers

app = typer.Typer(
    help="Ocean-sonar data conversion and processing with echopype and Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_options(pairs: List[str], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE parsed as JSON when it is JSON (true, 3, {...})."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{what} {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def storage_options(pairs: List[str], what: str, direction: str) -> dict[str, Any]:
    """Options become run parameters; credentials among them go by environment instead."""
    import os

    from echoflow.params import env_options, split_secrets

    settings, secrets = split_secrets(parse_options(pairs, what))
    if secrets:
        name = f"ECHOFLOW_{direction.upper()}_STORAGE_OPTIONS"
        os.environ[name] = json.dumps({**env_options(direction), **secrets})
    return settings


def _version(value: bool) -> None:
    if value:
        import echopype
        import prefect

        out.print(f"echoflow {__version__} (echopype {echopype.__version__}, prefect {prefect.__version__})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show versions and exit."),
) -> None:
    """echoflow: raw echosounder files → analysis-ready zarr / netCDF."""


@app.command()
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
    from echoflow.storage import is_glob, is_manifest
    from echoflow.workers import Workers, available_cpus

    # echopype takes seconds to import: worker processes load it while this process starts
    # Prefect, so this process never imports it.
    many = len(sources) > 1 or any(is_glob(s) or is_manifest(s) for s in sources)
    library = LibraryOutput(not verbose, (err,)).__enter__()  # workers' library warnings: to the run log
    pool = Workers(concurrency or available_cpus() if many else 1)
    pool.__enter__()
    try:
        _convert(
            pool,
            sources,
            sonar_model,
            out_prefix,
            output_type,
            xml,
            overwrite,
            concurrency,
            anon,
            input_option,
            output_option,
            verbose,
            json_out,
            quiet,
        )
    finally:
        pool.__exit__(None, None, None)
        library.__exit__(None, None, None)


def _convert(
    pool: Workers,
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
    from echoflow import display
    from echoflow.home import foreground_run, use_embedded_default
    from echoflow.workers import using

    if not verbose:  # read once, at Prefect's import
        os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "CRITICAL")
    where = use_embedded_default(quiet=not verbose)
    if not (quiet or json_out):
        err.print(f"[dim]runs recorded in: {where}[/]", highlight=False, soft_wrap=True)
    if not verbose:
        display.libraries_to_run_log(load_echopype=False)  # this process never imports echopype
    from echoflow.flows.batch import convert_batch
    from echoflow.flows.common import add_listener
    from echoflow.params import BatchRequest
    from echoflow.report import Summary

    if not verbose:
        quiet_prefect_internals()  # after Prefect's import, which sets its loggers' levels
    in_opts = storage_options(input_option, "--input-option", "input")
    if anon:
        in_opts["anon"] = True
    params: dict[str, Any] = dict(
        sources=sources,
        sonar_model=sonar_model,
        output_prefix=out_prefix,
        output_type=output_type,
        xml_path=xml,
        concurrency=concurrency,
        overwrite=overwrite,
        input_storage_options=in_opts,
        output_storage_options=storage_options(output_option, "--output-option", "output"),
    )
    try:
        with using(pool):
            BatchRequest(**params)  # the flow checks again; this gives a clean one-line error first
    except EchoflowError as exc:
        fail(one_line(exc))
    except ValueError as exc:
        fail(_pydantic_message(exc))

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
        remove = add_listener(lambda kind, value: seen.append(value) if kind == "file" else None)
        remove_bar = add_listener(on_event)
        try:
            with using(pool), foreground_run():
                state = convert_batch(**params, return_state=True)
            display.note_run(state)
            result = state.result(raise_on_failure=False)
        except Exception as exc:  # noqa: BLE001 - the API failed us; the files' own results stand
            result = api_lost(seen, counts["total"], where, exc)
        finally:
            remove()
            remove_bar()
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


def _pydantic_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in errors()]
        return "; ".join(parts)
    return str(exc)


@app.command()
def graph(
    flow_name: str = typer.Argument("convert-raw-sonar", help="convert-raw-sonar or convert-batch"),
    output: Path = typer.Option(Path("echoflow-graph.png"), "--out", "-o", help=".png, .svg, .pdf or .mmd"),
) -> None:
    """Write a flow's task graph to an image file (without running it)."""
    from echoflow.home import use_embedded_default

    use_embedded_default()
    from echoflow.graph import write_graph

    try:
        write_graph(flow_name, output)
    except EchoflowError as exc:
        fail(one_line(exc))
    out.print(f"wrote {output}")


@app.command()
def deploy(
    pool: str = typer.Option(..., "--pool", envvar="ECHOFLOW_WORK_POOL", help="Kubernetes work pool name"),
    image: str = typer.Option(..., "--image", envvar="ECHOFLOW_IMAGE", help="Image the flow-run Jobs run"),
    create_pool: bool = typer.Option(False, "--create-pool", help="Create the pool when it is absent"),
    base_job_template: Optional[Path] = typer.Option(
        None, "--base-job-template", help="JSON base job template (creates or updates the pool's)"
    ),
    deployment_name: str = typer.Option("echoflow", "--deployment-name", help="Name of each deployment"),
    concurrency_limit: Optional[int] = typer.Option(
        None,
        "--concurrency-limit",
        min=0,
        help="Most conversion Jobs at once (queue 'conversions'; cruise parents not counted)",
    ),
    flow: List[str] = typer.Option([], "--flow", help="Only these flows (default: all)"),
) -> None:
    """Register echoflow's flows as deployments on a work pool (any Prefect API; idempotent)."""
    from echoflow.home import use_embedded_default

    where = use_embedded_default()
    from echoflow.deploy import deploy as register

    try:
        changes = register(
            pool,
            image,
            create_pool=create_pool,
            base_job_template=base_job_template,
            deployment_name=deployment_name,
            concurrency_limit=concurrency_limit,
            flows=flow or None,
        )
    except EchoflowError as exc:
        fail(one_line(exc))
    except Exception as exc:  # noqa: BLE001 - an unreachable API, a refused request: one line
        fail(f"could not register deployments at {where}: {one_line(exc)}")
    table = Table(title=f"Prefect API: {where}", title_justify="left")
    for col in ("kind", "name", "action"):
        table.add_column(col)
    for c in changes:
        table.add_row(c.kind, c.name, c.action)
    out.print(table)
    out.print(
        f"run one: prefect deployment run 'convert-batch/{deployment_name}' "
        "-p sources='[\"s3://bucket/raw/*.raw\"]' -p sonar_model=EK60 -p output_prefix=s3://bucket/out"
    )


server_app = typer.Typer(help="The local Prefect API the CLI starts on first use.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start() -> None:
    """Start the local API (if not running) and print its addresses."""
    _server_line(start=True)


@server_app.command("status")
def server_status() -> None:
    """Show whether the local API is running, and its UI address."""
    _server_line(start=False)


@server_app.command("open")
def server_open() -> None:
    """Open the local API's UI in a browser (starting the API if needed)."""
    import webbrowser

    url = _server_line(start=True)
    webbrowser.open(url.removesuffix("/api"))


def _server_line(start: bool) -> str:
    from echoflow.home import configured_api, echoflow_home
    from echoflow.localserver import ensure, preferred_port, running, ui_url

    home = echoflow_home()
    other = configured_api()
    if other is not None:  # the local API is only used when no Prefect API is configured
        err.print(f"[dim]note: runs go to {other.describe()}, not to this local API[/]", highlight=False)
    url = ensure(home) if start else running(home)
    if url:
        out.print(f"running: API {url}, UI {ui_url(url)} (home {home})", highlight=False, soft_wrap=True)
    else:
        out.print(
            f"not running (home {home}; it will use port {preferred_port(home)} or the next free one)",
            highlight=False,
            soft_wrap=True,
        )
    return url or ""


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local API (the next command starts it again)."""
    from echoflow.home import echoflow_home
    from echoflow.localserver import stop

    out.print("stopped" if stop(echoflow_home()) else "not running")


def _register_extras() -> None:
    try:
        from echoflow.recipes.commands import register
    except ImportError:  # recipes not installed in this build
        return
    register(app)


_register_extras()
from echoflow.cluster import register as _register_cluster  # noqa: E402 - the chart's pod checks

_register_cluster(app)

from echoflow.watch_cli import register as _register_watch  # noqa: E402 - needs `app`

_register_watch(app)


def _skip_teardown(status: list[int]) -> None:
    """The last exit handler: the others have run (Prefect has sent its logs and events),
    and tearing down the interpreter's modules would only add ~0.3 s to every command."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status[0])


def main() -> None:
    status = [1]
    atexit.register(_skip_teardown, status)  # registered first, so it runs last
    try:
        app()
        status[0] = 0
    except SystemExit as exc:
        status[0] = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        raise
    except KeyboardInterrupt:
        status[0] = 130  # what a shell reports for Ctrl-C
        raise
    except EchoflowError as exc:
        status[0] = 2
        err.print(f"[bold red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - still one line; ECHOFLOW_DEBUG=1 shows the traceback
        if os.environ.get("ECHOFLOW_DEBUG"):
            raise
        status[0] = 1
        err.print(
            f"[bold red]error:[/] {one_line(exc)} (ECHOFLOW_DEBUG=1 shows where)", highlight=False, soft_wrap=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
