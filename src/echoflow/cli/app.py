"""The typer app: every command group registered once, and the process exit."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup
from typer.exceptions import TyperException

from echoflow import __version__
from echoflow.cli import cluster, convert, deploy, recipes, server, watch
from echoflow.cli.common import ExitCode, fail, out, pydantic_message
from echoflow.errors import EchoflowError, one_line


class Commands(TyperGroup):
    """Every command's errors end here: one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # typer.Exit, usage errors: already what the user should see
        except (EchoflowError, ValidationError) as exc:  # bad input or parameters, before any work
            message = pydantic_message(exc) if isinstance(exc, ValidationError) else one_line(exc)
            fail(message, ExitCode.USAGE)
        except Exception as exc:  # noqa: BLE001 - still one line; ECHOFLOW_DEBUG=1 shows the traceback
            if isinstance(exc, BrokenPipeError) and _reader_gone():
                raise  # `echoflow … | head`: click ends quietly, as `yes | head` does
            if os.environ.get("ECHOFLOW_DEBUG"):
                raise
            fail(f"{one_line(exc)} (ECHOFLOW_DEBUG=1 shows where)", ExitCode.FAILED)


def _reader_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (not some socket of the run)."""
    import select

    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


app = typer.Typer(
    cls=Commands,
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
    if "echoflow.workers" in sys.modules:  # a fork server started for nothing would outlive us
        sys.modules["echoflow.workers"].stop_unused_server()
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
