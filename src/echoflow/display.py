"""What the CLI prints: progress, summaries, JSON; and library noise kept off the terminal.

In a terminal progress is a bar; without one (scripts, CI logs) it is a line every
ECHOFLOW_PROGRESS_SECONDS (default 10). Tables never split a name: they are as wide as
their longest row, whatever the terminal says. Library warnings (echopype's, zarr's)
belong in the run's log (see runlog.py), where `-v` shows them too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from echoflow.runlog import LibraryOutput, libraries_to_run_log  # noqa: F401 - the CLI's one import for output

COLOUR = {"converted": "green", "computed": "green", "skipped": "cyan", "failed": "red"}


class Reporter:
    """Progress of a job of many items: a bar in a terminal, periodic lines otherwise, or nothing."""

    def __init__(self, console: Console, what: str, enabled: bool = True) -> None:
        self.console, self.what, self.enabled = console, what, enabled
        self.tty = console.is_terminal
        self.interval = float(os.environ.get("ECHOFLOW_PROGRESS_SECONDS", "10"))
        self.total: Optional[int] = None
        self.done = self.failed = 0
        self._bar: Optional[Progress] = None
        self._job: Any = None
        self._start = self._last = time.monotonic()

    def __enter__(self) -> "Reporter":
        if self.enabled and self.tty:
            self._bar = Progress(
                TextColumn(f"[bold]{self.what}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._job = self._bar.add_task("", total=None)
        return self

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
        elif self.enabled and kind is None and self.done and time.monotonic() - self._last > 0.5:
            self._line()

    def set_total(self, n: int) -> None:
        self.total = n
        if self._bar is not None:
            self._bar.update(self._job, total=n)
        elif self.enabled:
            self.console.print(f"{self.what} {n} file{'s' if n != 1 else ''}", highlight=False, soft_wrap=True)

    def advance(self, name: str, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        if self._bar is not None:
            self._bar.update(self._job, advance=1, description=name)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        failed = f", {self.failed} failed" if self.failed else ""
        self.console.print(
            f"{self.what}: {self.done}/{self.total if self.total is not None else '?'} files"
            f"{failed}, {self._last - self._start:.0f} s",
            highlight=False,
            soft_wrap=True,
        )


def relative(url: Optional[str], prefix: str) -> str:
    """An output as the user would name it: relative to the --out they gave."""
    if not url:
        return ""
    base = prefix.rstrip("/") + "/"
    if url.startswith(base):
        return url[len(base) :]
    try:
        return str(PurePosixPath(url).relative_to(PurePosixPath(prefix)))
    except ValueError:
        return url


def print_wide(console: Console, table: Table) -> None:
    """Print a table as wide as it needs: names are never folded, whatever the terminal width."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update(width=10_000), table).maximum
    width = console.width
    console.width = max(width, need)  # print() itself never goes wider than the console
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def summary_table(summary: Any, out_prefix: str) -> Table:
    table = Table(title=f"{summary.headline()}\noutputs under {out_prefix}", title_justify="left")
    for col in ("file", "status", "output", "MB", "s"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("MB", "s") else "left")
    for f in summary.files:
        table.add_row(
            PurePosixPath(f.source).name,
            f"[{COLOUR.get(f.status, 'yellow')}]{f.status}[/]",
            relative(f.output, out_prefix),
            f"{f.bytes / 1e6:.2f}" if f.bytes else "",
            f"{f.seconds:.1f}" if f.seconds else "",
        )
    return table


def print_summary(console: Console, summary: Any, out_prefix: str) -> None:
    print_wide(console, summary_table(summary, out_prefix))
    print_errors(console, [f.error for f in summary.files if f.error])
    print_run_url(console)


def print_errors(console: Console, errors: list[str]) -> None:
    for e in errors:  # whole lines, never folded: they are what a user acts on
        console.print(f"[red]failed:[/] {e}", soft_wrap=True, highlight=False)


def print_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout, nothing else there (for scripts: `| jq`)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def summary_json(summary: Any, out_prefix: str, api: str) -> dict[str, Any]:
    return {
        "ok": summary.ok,
        "headline": summary.headline(),
        "output_prefix": out_prefix,
        "prefect_api": api,
        "run_url": run_url(),
        "counts": {s: summary.count(s) for s in sorted({f.status for f in summary.files})},
        "files": [f.model_dump() for f in summary.files],
    }


_last_run_url: Optional[str] = None


def note_run(state: Any) -> None:
    """The run just finished: its log gets the captured library output; its UI page is shown."""
    global _last_run_url
    run_id = getattr(state.state_details, "flow_run_id", None)
    if LibraryOutput.active is not None:
        LibraryOutput.active.run_id = run_id
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    _last_run_url = f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui and run_id else None


def run_url() -> Optional[str]:
    """The UI page of the run this command recorded (None when there is no UI)."""
    return _last_run_url


def print_run_url(console: Console) -> None:
    if _last_run_url:
        console.print(f"run: {_last_run_url}", highlight=False, soft_wrap=True)


class Ticker:
    """A job without per-item events: a spinner in a terminal, a line every
    ECHOFLOW_PROGRESS_SECONDS otherwise, nothing when disabled."""

    def __init__(self, console: Console, what: str, enabled: bool = True) -> None:
        self.console, self.what, self.enabled = console, what, enabled
        self.interval = float(os.environ.get("ECHOFLOW_PROGRESS_SECONDS", "10"))
        self._status: Any = None
        self._stop: Any = None

    def __enter__(self) -> "Ticker":
        import threading

        if not self.enabled:
            return self
        if self.console.is_terminal:
            self._status = self.console.status(self.what)
            self._status.__enter__()
            return self
        self.console.print(self.what, highlight=False, soft_wrap=True)
        self._stop = threading.Event()
        start = time.monotonic()

        def tick() -> None:
            while not self._stop.wait(max(self.interval, 0.2)):
                self.console.print(f"{self.what}: {time.monotonic() - start:.0f} s", highlight=False, soft_wrap=True)

        threading.Thread(target=tick, daemon=True, name="echoflow-progress").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
        if self._stop is not None:
            self._stop.set()


def results_table(data: dict[str, Any], prefix: str) -> Table:
    """A recipe's outputs, one row each; errors are printed whole below, not squeezed in a column."""
    table = Table(title=f"{data.get('headline', '')}\noutputs under {prefix}", title_justify="left")
    for col in ("stage", "item", "status", "output", "s"):
        table.add_column(col, no_wrap=True, justify="right" if col == "s" else "left")
    for r in data.get("results", []):
        table.add_row(
            r["stage"],
            r["item"],
            f"[{COLOUR.get(r['status'], 'yellow')}]{r['status']}[/]",
            relative(r.get("output"), prefix),
            f"{r['seconds']:.1f}" if r.get("seconds") else "",
        )
    return table
