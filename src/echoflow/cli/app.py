"""The typer app: every command group registered once, and the process exit."""

from __future__ import annotations

import atexit
import logging
import os
import sys

import typer

from echoflow import __version__
from echoflow.cli import cluster, convert, deploy, recipes, server, watch
from echoflow.cli.common import ExitCode, err, out
from echoflow.errors import EchoflowError, one_line

app = typer.Typer(
    help="Ocean-sonar data conversion and processing with echopype and Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


app.command()(convert.convert)
app.command()(deploy.graph)
app.command()(deploy.deploy)
app.add_typer(server.server_app, name="server")
recipes.register(app)
watch.register(app)


cluster.register(app)


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
        status[0] = ExitCode.USAGE
        err.print(f"[bold red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(ExitCode.USAGE)
    except Exception as exc:  # noqa: BLE001 - still one line; ECHOFLOW_DEBUG=1 shows the traceback
        if os.environ.get("ECHOFLOW_DEBUG"):
            raise
        status[0] = ExitCode.FAILED
        err.print(
            f"[bold red]error:[/] {one_line(exc)} (ECHOFLOW_DEBUG=1 shows where)", highlight=False, soft_wrap=True
        )
        sys.exit(ExitCode.FAILED)
