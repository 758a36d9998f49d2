"""The `echoflow` command: thin — parse, call a flow or the core, print.

One module per command group (`convert`, `deploy` + `graph`, `server`, `recipes`, `watch`;
the cluster checks live in `echoflow.cluster`), shared helpers in `common`, the typer app
and the process exit in `app`. Nothing is imported here, so a command module can import
`echoflow.cli.common` without a cycle.
"""

from __future__ import annotations


def main() -> None:
    from echoflow.cli.app import main as run

    run()
