"""`echoflow server start|status|open|stop`: the local Prefect API the CLI starts on first use."""

from __future__ import annotations

import typer

from echoflow.cli.common import err, out

server_app = typer.Typer(help="The local Prefect API the CLI starts on first use.", no_args_is_help=True)


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
