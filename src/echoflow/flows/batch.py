"""`convert_batch`: many raw files, one output each, in parallel processes.

echopype's parsers hold the GIL, so conversions run in a pool of worker processes that
load only echopype; Prefect orchestrates from threads of the flow's own process (one
task run per file: states, retries, logs). Workers return only a small result record,
so no converted dataset outlives its file, and they start while the flow plans.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from echoflow import convert, runtime, storage
from echoflow.errors import FileCancelled, TransientIOError, one_line
from echoflow.flows.arguments import documented, request
from echoflow.flows.common import TASK_OPTIONS, run_logger, warn_on_credentials
from echoflow.flows.runs import batch_run_name, echoflow_flow, file_task_name, name_file_count
from echoflow.params import EXTENSIONS, BatchRequest, ConvertRequest, OutputType
from echoflow.report import FileResult, Summary
from echoflow.stopping import Stop, on_signals
from echoflow.workers import Workers, available_cpus


@task(
    name="Convert File",
    task_run_name=file_task_name,  # type: ignore[arg-type]  # Prefect passes the parameters
    **TASK_OPTIONS,
)
def convert_file(req: ConvertRequest, stop: Optional[Stop] = None) -> FileResult:
    log = run_logger()
    if stop is not None and stop.is_set():
        raise FileCancelled(f"not started: the run was stopped ({stop.name}); run again to convert it")
    run_id = flow_run.get_id()  # recorded in the marker: a retry then knows this run's own output
    try:
        result = runtime.current().run(convert.convert_file, req, None, run_id)
    except TransientIOError:
        if stop is not None and stop.is_set():  # its worker was stopped, not a hiccup to retry
            raise FileCancelled(
                f"aborted: the run was stopped ({stop.name}) and the file did not finish "
                f"within {stop.grace:.0f} s; nothing was committed, run again to convert it"
            ) from None
        raise
    if result.note:
        log.info("%s: %s", storage.shown(req.raw_file), result.note)
    log.info(
        "%s %s -> %s (%s bytes, %.1f s)",
        result.status,
        storage.shown(req.raw_file),
        result.output,
        result.bytes,
        result.seconds or 0,
    )
    return result


def plan(req: BatchRequest) -> tuple[list[ConvertRequest], list[FileResult]]:
    """One request per source (a file named twice is kept once); distinct sources whose
    output names collide fail, with the naming rule, rather than overwrite each other."""
    ext = EXTENSIONS[req.output_type]
    todo: list[ConvertRequest] = []
    rejected: list[FileResult] = []
    owner: dict[str, str] = {}
    for src in storage.expand_sources(req.sources, req.input_storage_options):
        out = storage.output_url(req.output_prefix, src, ext)
        if out in owner:
            rejected.append(
                FileResult(
                    source=storage.public_url(src),
                    status="failed",
                    error=f"{storage.shown(src)}: its output {out} would overwrite that of "
                    f"{storage.shown(owner[out])} (outputs are named after the file name without its "
                    "suffix); convert files of the same name to different --out prefixes",
                )
            )
            continue
        owner[out] = src
        todo.append(req.file_request(src, out))
    return todo, rejected


def run_files(todo: list[ConvertRequest], workers: int) -> list[FileResult]:
    return run_stoppable(todo, workers)[0]


def run_stoppable(todo: list[ConvertRequest], workers: int) -> tuple[list[FileResult], Optional[Stop]]:
    """Run the file tasks; a failed file becomes a 'failed' record, never a lost result.
    On SIGTERM/SIGINT no new file starts; running ones get the grace period, then are
    aborted cleanly (their workers unwind: staging removed, locks freed)."""
    results: dict[int, FileResult] = {}

    def record(i: int, req: ConvertRequest, get: Any) -> None:
        try:
            res = get()
        except FileCancelled as exc:
            res = FileResult(
                source=storage.public_url(req.raw_file),
                status="cancelled",
                output=storage.public_url(convert.resolve_output(req)),
                error=one_line(exc),
            )
        except Exception as exc:  # noqa: BLE001 - every file's failure is reported, not raised
            res = FileResult(
                source=storage.public_url(req.raw_file),
                status="failed",
                output=storage.public_url(convert.resolve_output(req)),
                error=one_line(exc),
            )
        results[i] = res
        runtime.current().emit("file", res)

    given = runtime.current().workers
    with on_signals() as stop:
        if not given and (workers <= 1 or len(todo) <= 1):
            # In-process: no pool start-up cost for one file or one worker (a stop lets
            # the running file finish).
            for i, req in enumerate(todo):
                record(i, req, lambda req=req: convert_file(req, stop))
        else:
            # A pool the caller started early (the CLI does, to overlap its start-up) is
            # reused. Twice as many task threads as processes keep a file queued for every
            # process, so none waits on Prefect's bookkeeping between files.
            with (
                nullcontext(given) if given else Workers(workers) as pool,
                runtime.entered(workers=pool),
                ThreadPoolTaskRunner[Any](max_workers=2 * max(workers, pool.count)) as runner,
            ):
                futures = {runner.submit(convert_file, {"req": r, "stop": stop}): (i, r) for i, r in enumerate(todo)}
                _gather(futures, pool, stop, record)
    ordered = [results[i] for i in sorted(results)]
    return ordered, (stop if stop.is_set() else None)


def _gather(futures: dict[Any, tuple[int, ConvertRequest]], pool: Workers, stop: Stop, record: Any) -> None:
    pending = set(futures)
    aborted = False
    while pending:
        done, pending = wait(list(pending), timeout=0.5)
        for fut in done:
            i, req = futures[fut]
            record(i, req, fut.result)
        if stop.is_set() and not aborted and stop.due():
            run_logger().warning(
                "stopping (%s): aborting %d running file(s) after the %.0f s grace period",
                stop.name,
                len(pending),
                stop.grace,
            )
            pool.abort()
            aborted = True


def finish(summary: Summary, title: str, stop: Optional[Stop] = None) -> State:
    log = run_logger()
    if FlowRunContext.get() is not None:  # not while tracing a graph outside any run
        create_table_artifact(
            key="echoflow-summary", table=summary.table(), description=f"{title}: {summary.headline()}"
        )
    data = summary.model_dump()
    if stop is not None:
        message = f"stopped by {stop.name}: {summary.headline()}"
        log.warning(message)
        return Cancelled(message=message, data=data)
    if summary.ok:
        log.info(summary.headline())
        return Completed(message=summary.headline(), data=data)
    for f in summary.files:
        if f.status == "failed":
            log.error("failed: %s", f.error)
    done = len(summary.files) - summary.failed
    name = "Failed" if done == 0 else "PartiallyFailed"
    return Failed(name=name, message=summary.headline(), data=data)


@echoflow_flow(name="convert-batch", flow_run_name=batch_run_name, log_prints=True)
@documented()
def convert_batch(
    sources: list[str],
    sonar_model: str,
    output_prefix: str,
    output_type: OutputType = "netcdf",
    xml_path: Optional[str] = None,
    convert_params: Optional[dict[str, Any]] = None,
    concurrency: int = 0,
    overwrite: bool = False,
    input_storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated
    output_storage_options: dict[str, Any] = {},  # noqa: B006
) -> State:
    """Convert many raw files to `<output_prefix>/<stem>.nc|.zarr`, one output per file.

    Complete outputs are skipped unless `overwrite`; the run fails, listing every file, when any fails.
    """
    req = request(BatchRequest, locals())
    warn_on_credentials(input_storage_options, output_storage_options)
    storage.check_writable(req.output_prefix, req.output_storage_options)
    todo, rejected = plan(req)
    workers = min(req.concurrency or available_cpus(), max(1, len(todo)))
    run_logger().info(
        "%d files to %s with %d worker process(es)",
        len(todo) + len(rejected),
        storage.shown(req.output_prefix),
        workers,
    )
    name_file_count(len(todo) + len(rejected))
    progress = runtime.current()
    progress.emit("total", len(todo) + len(rejected))
    for r in rejected:
        progress.emit("file", r)
    results, stop = run_stoppable(todo, workers)
    summary = Summary(files=rejected + results, stopped=stop.signum if stop else None)
    return finish(summary, "convert-batch", stop)
