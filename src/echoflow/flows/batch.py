"""`convert_batch`: many raw files, one output each, in parallel processes.

echopype's parsers hold the GIL, so conversions run in a pool of worker processes that
load only echopype; Prefect orchestrates from threads of the flow's own process (one
task run per file: states, retries, logs). Workers return only a small result record,
so no converted dataset outlives its file, and they start while the flow plans.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

from prefect import flow, task
from prefect.context import FlowRunContext
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from echoflow import convert, storage
from echoflow.errors import one_line
from echoflow.flows.common import run_logger, warn_on_credentials, RETRIES, RETRY_DELAYS, emit, retry_transient
from echoflow.params import EXTENSIONS, BatchRequest, ConvertRequest, OutputType
from echoflow.report import FileResult, Summary
from echoflow.workers import Workers, available_cpus, current_workers, using


@task(name="Convert File", task_run_name="convert {req.raw_file}", cache_policy=NO_CACHE,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def convert_file(req: ConvertRequest) -> FileResult:
    log = run_logger()
    workers = current_workers()
    result = workers.run(convert.convert_file, req) if workers else convert.convert_file(req)
    log.info("%s %s -> %s (%s bytes, %.1f s)", result.status, storage.shown(req.raw_file),
             result.output, result.bytes, result.seconds or 0)
    return result


def plan(req: BatchRequest) -> tuple[list[ConvertRequest], list[FileResult]]:
    """One request per source; sources whose output name collides with an earlier one fail."""
    ext = EXTENSIONS[req.output_type]
    todo: list[ConvertRequest] = []
    rejected: list[FileResult] = []
    owner: dict[str, str] = {}
    for src in storage.expand_sources(req.sources, req.input_storage_options):
        out = storage.output_url(req.output_prefix, src, ext)
        if out in owner:
            rejected.append(FileResult(
                source=storage.public_url(src), status="failed",
                error=f"{storage.shown(src)}: its output {out} would overwrite that of "
                      f"{storage.shown(owner[out])}; give the files distinct names"))
            continue
        owner[out] = src
        todo.append(req.file_request(src, out))
    return todo, rejected


def run_files(todo: list[ConvertRequest], workers: int) -> list[FileResult]:
    """Run the file tasks; a failed file becomes a 'failed' record, never a lost result."""
    results: list[FileResult] = []
    order = {id(r): i for i, r in enumerate(todo)}

    def record(req: ConvertRequest, future: Any) -> None:
        try:
            res = future.result()
        except Exception as exc:  # noqa: BLE001 - every file's failure is reported, not raised
            res = FileResult(source=storage.public_url(req.raw_file), status="failed",
                             output=storage.public_url(convert.resolve_output(req)),
                             error=one_line(exc))
        results.append(res)
        emit("file", res)

    given = current_workers()
    if not given and (workers <= 1 or len(todo) <= 1):
        # In-process: no pool start-up cost for one file or one worker.
        for req in todo:
            record(req, _Now(convert_file, req))
        return results
    # A pool the caller started early (the CLI does, to overlap its start-up) is reused.
    # Twice as many task threads as processes keep a file queued for every process, so
    # none waits on Prefect's bookkeeping between files.
    with (nullcontext(given) if given else Workers(workers)) as pool, using(pool), \
            ThreadPoolTaskRunner(max_workers=2 * max(workers, pool.count)) as runner:
        futures = {runner.submit(convert_file, {"req": r}): r for r in todo}
        for fut in as_completed(list(futures)):
            record(futures[fut], fut)
    position = {storage.public_url(r.raw_file): order[id(r)] for r in todo}
    return sorted(results, key=lambda r: position.get(r.source, len(todo)))


class _Now:
    """Runs a task in this process and exposes `.result()` like a future."""

    def __init__(self, fn: Any, req: ConvertRequest) -> None:
        self._state = fn(req, return_state=True)

    def result(self) -> FileResult:
        return self._state.result()


def finish(summary: Summary, title: str) -> State:
    log = run_logger()
    if FlowRunContext.get() is not None:  # not while tracing a graph outside any run
        create_table_artifact(key="echoflow-summary", table=summary.table(),
                              description=f"{title}: {summary.headline()}")
    data = summary.model_dump()
    if summary.ok:
        log.info(summary.headline())
        return Completed(message=summary.headline(), data=data)
    for f in summary.files:
        if f.status == "failed":
            log.error("failed: %s", f.error)
    done = len(summary.files) - summary.failed
    name = "Failed" if done == 0 else "PartiallyFailed"
    return Failed(name=name, message=summary.headline(), data=data)


@flow(name="convert-batch", log_prints=True)
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
    """Convert many raw files (paths, s3:// or https:// URLs, globs, or text manifests ending
    in .txt/.lst/.manifest or prefixed with '@') to `<output_prefix>/<stem>.nc|.zarr`.

    `concurrency` is the number of worker processes (0: one per available CPU). Complete
    outputs are skipped unless `overwrite`; the run fails, listing every file, when any fails.
    """
    warn_on_credentials(input_storage_options, output_storage_options)
    req = BatchRequest(
        sources=sources, sonar_model=sonar_model, output_prefix=output_prefix,
        output_type=output_type, xml_path=xml_path, convert_params=convert_params,
        concurrency=concurrency, overwrite=overwrite,
        input_storage_options=input_storage_options, output_storage_options=output_storage_options,
    )
    storage.check_writable(req.output_prefix, req.output_storage_options)
    todo, rejected = plan(req)
    workers = min(req.concurrency or available_cpus(), max(1, len(todo)))
    run_logger().info("%d files to %s with %d worker process(es)", len(todo) + len(rejected),
                          storage.shown(req.output_prefix), workers)
    emit("total", len(todo) + len(rejected))
    for r in rejected:
        emit("file", r)
    results = run_files(todo, workers)
    return finish(Summary(files=rejected + results), "convert-batch")
