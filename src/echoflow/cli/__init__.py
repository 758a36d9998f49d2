"""The `echoflow` command: thin — parse, call a flow or the core, print.

One module per command group (`convert`, `deploy` + `graph`, `server`, `recipes`, `watch`;
the cluster checks live in `echoflow.cluster`), shared helpers in `common`, the typer app
and the process exit in `app`. Nothing is imported here, so a command module can import
`echoflow.cli.common` without a cycle.
"""

from __future__ import annotations

# Commands whose work runs on worker processes, and the flags that mean none will run.
WORKER_COMMANDS = {"convert", "run", "watch"}
NO_WORK_FLAGS = {"--help", "-h", "--dry-run", "-n"}


def main() -> None:
    import sys

    args = sys.argv[1:]
    if args[:1] and args[0] in WORKER_COMMANDS and not NO_WORK_FLAGS.intersection(args):
        from echoflow.workers import start_server

        start_server()  # before the app's imports: the workers' echopype import is the long pole
    from echoflow.cli.app import main as run

    run()
