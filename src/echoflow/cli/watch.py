"""`echoflow watch`: convert raw files as they land in a folder, glob or s3:// prefix.

Long-running on the embedded default. Every interval one listing; the new settled files of
a listing go through the batch flow as one run; one line per file, a heartbeat line when
idle. SIGTERM/SIGINT: no new file starts, running files get the batch's grace period to
finish, then are aborted cleanly; the exit code is 128 + the signal (143, 130).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from echoflow.cli.common import io_options
from echoflow.errors import EchoflowError, is_transient, one_line

out = Console(highlight=False, soft_wrap=True)
KEEPALIVE_SECONDS = 600  # the local API stops after 30 idle minutes; a listing is no request to it


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def watch(
    source: str = typer.Argument(..., help="Folder, glob (quote it) or s3:// prefix to watch"),
    sonar_model: str = typer.Option(..., "--sonar-model", "-m", help="EK60, EK80, AZFP, AD2CP, …"),
    out_prefix: str = typer.Option(..., "--out", "-o", help="Output folder or s3:// prefix"),
    output_type: str = typer.Option("netcdf", "--format", "-f", help="zarr or netcdf"),
    xml: Optional[str] = typer.Option(None, "--xml", help="Instrument XML (AZFP)"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Also run this recipe after new files convert"),
    interval: float = typer.Option(10.0, "--interval", min=0.2, help="Seconds between listings"),
    settle: float = typer.Option(
        30.0, "--settle", min=0.0, help="Seconds a file must be unchanged (size and mtime) before it is taken"
    ),
    ready_suffix: Optional[str] = typer.Option(
        None, "--ready-suffix", help="Take a file only when <name><suffix> exists, e.g. .done"
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Retry files that failed before (once)"),
    heartbeat: float = typer.Option(60.0, "--heartbeat", min=0.0, help="Seconds between idle lines"),
    concurrency: int = typer.Option(0, "--concurrency", "-j", min=0, help="Worker processes (0: one per CPU)"),
    anon: bool = typer.Option(False, "--anon", help="Read inputs anonymously (public buckets)"),
    input_option: List[str] = typer.Option([], "--input-option", help="fsspec option for inputs, KEY=VALUE"),
    output_option: List[str] = typer.Option([], "--output-option", help="fsspec option for outputs, KEY=VALUE"),
) -> None:
    """Watch a folder or prefix and convert each raw file once it has settled; runs until Ctrl-C/SIGTERM."""
    from echoflow import runtime, storage
    from echoflow import watch as w
    from echoflow.listing import check_source
    from echoflow.params import EXTENSIONS, BatchRequest
    from echoflow.stopping import on_signals
    from echoflow.workers import Workers, available_cpus, yield_to_workers

    params: dict[str, Any] = dict(
        sonar_model=sonar_model,
        output_prefix=out_prefix,
        output_type=output_type,
        xml_path=xml,
        concurrency=concurrency,
        **io_options(input_option, output_option, anon),
    )
    pool = Workers(concurrency or available_cpus())
    pool.__enter__()  # workers load echopype while this process starts Prefect
    yield_to_workers()  # the conversions come first on a busy machine
    try:
        with runtime.entered(workers=pool):
            req = BatchRequest(sources=[source], **params)  # one clean line before anything runs
        check_source(source)
        storage.check_writable(req.output_prefix, req.output_storage_options)
        if recipe is not None:
            from echoflow.recipes.load import load_recipe

            load_recipe(str(recipe), {}, env=False)
        watcher = w.Watcher(
            source,
            req.output_prefix,
            EXTENSIONS[req.output_type],
            settle=settle,
            ready_suffix=ready_suffix,
            retry_failed=retry_failed,
            input_options=req.input_storage_options,
            output_options=req.output_storage_options,
        )
        with on_signals() as stop:
            Loop(watcher, pool, params, stop, interval, heartbeat, recipe).run()
    finally:
        pool.__exit__(None, None, None)
    raise typer.Exit(stop.exit_code if stop.is_set() else 0)


class Loop:
    def __init__(
        self,
        watcher: Any,
        pool: Any,
        params: dict[str, Any],
        stop: Any,
        interval: float,
        heartbeat: float,
        recipe: Optional[Path],
    ) -> None:
        self.watcher, self.pool, self.params, self.stop = watcher, pool, params, stop
        self.interval, self.heartbeat, self.recipe = interval, heartbeat, recipe
        self.counts = {"converted": 0, "failed": 0}
        self.last_line = 0.0
        self.api_touched = time.monotonic()

    def say(self, text: str) -> None:
        out.print(f"{_now()} {text}")
        self.last_line = time.monotonic()

    def run(self) -> None:
        from echoflow import storage
        from echoflow.home import use_embedded_default

        where = use_embedded_default(quiet=True)
        self.say(
            escape(
                f"watching {storage.shown(self.watcher.source)} every {self.interval:g} s "
                f"(settle {self.watcher.settle:g} s) -> {storage.shown(self.watcher.prefix)}; runs in {where}"
            )
        )
        first = True
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.once()
            except EchoflowError as exc:
                if first and not is_transient(exc):
                    raise
                self.say(f"[yellow]listing failed[/], trying again next interval: {escape(one_line(exc))}")
            first = False
            self.stop.requested.wait(max(0.0, self.interval - (time.monotonic() - started)))
        self.say(
            f"stopped ({self.stop.name}): {self.counts['converted']} converted, "
            f"{self.counts['failed']} failed since start"
        )

    def once(self) -> None:
        poll = self.watcher.poll()
        if poll.done:
            self.say(f"{len(poll.done)} file(s) complete already (markers), not converted again")
        for _file, error in poll.failed_before:
            self.say(f"[red]failed before[/], unchanged since (--retry-failed to retry): {escape(error)}")
        converted = self.convert(poll.ready) if poll.ready and not self.stop.is_set() else 0
        if converted and self.recipe is not None and not self.stop.is_set():
            self.run_recipe()
        if poll.ready or poll.done or poll.failed_before:
            return
        self.keep_api_alive()
        if time.monotonic() - self.last_line >= self.heartbeat:
            known = self.watcher.files.values()
            self.say(
                f"idle: {poll.listed} files listed, {sum(e.status == 'done' for e in known)} done, "
                f"{sum(e.status == 'failed' for e in known)} failed, {len(poll.waiting)} not settled yet"
            )

    def convert(self, files: list[Any]) -> int:
        from echoflow import runtime, storage
        from echoflow.flows.batch import convert_batch
        from echoflow.home import foreground_run
        from echoflow.report import Summary

        with runtime.entered(workers=self.pool), foreground_run():
            state = convert_batch(sources=[f.url for f in files], **self.params, return_state=True)
        self.api_touched = time.monotonic()
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            self.say(f"[red]conversion run failed[/], the files stay new: {escape(one_line(result))}")
            return 0
        summary = Summary.model_validate(result)
        if summary.stopped:  # the batch caught the signal: stop here too
            self.stop.request(summary.stopped)
        by_source = {r.source: r for r in summary.files}
        done = time.time()
        converted = 0
        for f in files:
            r = by_source.get(storage.public_url(f.url))
            name = escape(f.url.rsplit("/", 1)[-1])  # names and errors are text, not markup
            if r is None or r.status == "cancelled":
                self.say(
                    f"[yellow]not finished[/] {name}: {escape(r.error or '') if r else 'no result'} (taken again next time)"
                )
                continue
            if r.status == "failed":
                self.watcher.record(f, "failed", r.error)
                self.counts["failed"] += 1
                self.say(f"[red]failed[/] {name}: {escape(r.error or '')}")
                continue
            self.watcher.record(f, r.status)
            entry = self.watcher.files[f.url]
            lag = done - self.watcher.settled_at(f, entry)
            if r.status == "converted":
                converted += 1
                self.counts["converted"] += 1
            mb = f"{r.bytes / 1e6:.2f} MB, " if r.bytes else ""
            self.say(
                f"[green]{r.status}[/] {name} -> {escape(r.output or '')} ({mb}{r.seconds or 0:.1f} s; "
                f"complete {lag:.1f} s after settling)"
            )
        return converted

    def run_recipe(self) -> None:
        from echoflow.home import foreground_run
        from echoflow.recipes.flow import run_recipe

        with foreground_run():
            state = run_recipe(recipe=str(self.recipe), return_state=True)
        data = state.result(raise_on_failure=False)
        text = one_line(data) if isinstance(data, BaseException) else data.get("headline", state.message)
        self.say(f"recipe {'done' if state.is_completed() else '[red]failed[/]'}: {escape(str(text))}")

    def keep_api_alive(self) -> None:
        if time.monotonic() - self.api_touched < KEEPALIVE_SECONDS:
            return
        import httpx

        url = os.environ.get("PREFECT_API_URL", "")
        if url.startswith(("http://127.0.0.1", "http://localhost")):
            try:
                httpx.get(f"{url}/health", timeout=5)
            except httpx.HTTPError:
                pass
        self.api_touched = time.monotonic()


def register(app: typer.Typer) -> None:
    app.command(name="watch")(watch)
