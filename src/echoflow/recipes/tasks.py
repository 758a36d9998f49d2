"""The recipe's Prefect tasks: one per batch of file chains, one per group output.

Tasks run on threads of the flow's process and hand the echopype work to the worker pool
(`echoflow.workers`, the one `convert` uses), so this process never holds a file's data.
A task run covers a batch of files, not one: each task run costs the flow process and the
API ~40 ms of CPU, taken from the same cores as the workers (a fifth of a small file's
chain), and a cruise of thousands of files would fill the UI and the database with them.
Each file is still reported: a log line per file, and the run's results table.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager, nullcontext
from math import ceil
from typing import Any, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from echoflow import runtime
from echoflow.errors import is_transient, one_line
from echoflow.flows.common import RETRIES, RETRY_DELAYS, TASK_OPTIONS, run_logger
from echoflow.recipes.chain import ChainResult, failed, run_chain
from echoflow.recipes.plan import FileChain, Job
from echoflow.recipes.reduce import run_reduce
from echoflow.recipes.stages import StageResult
from echoflow.workers import Workers, available_cpus

Todo = tuple[FileChain, list[str]]  # a chain and its outputs already complete

FILES_PER_TASK = 20  # at most, so a task run's log stays readable
BATCHES_IN_FLIGHT = 2  # one batch's files wait on the pool while the other's finish


def retry_delay(attempt: int) -> float:
    return float(RETRY_DELAYS(RETRIES)[attempt]) * random.uniform(0.8, 1.2)  # as the tasks' retries


def batch_label(todo: list[Todo]) -> str:
    items = [c.item for c, _ in todo]
    return f"chain {items[0]}" if len(items) == 1 else f"chains {items[0]} … {items[-1]} ({len(items)} files)"


def run_batch(todo: list[Todo]) -> list[StageResult]:
    """Every chain of the batch at once on the pool; a network or storage hiccup resubmits
    that file (up to RETRIES times), any other failure marks its outputs failed."""
    log = run_logger()
    rt = runtime.current()
    running = {rt.submit(run_chain, c, d): (c, d, 0) for c, d in todo}
    out: dict[str, list[StageResult]] = {}
    while running:
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in finished:
            chain, done, attempt = running.pop(fut)
            try:
                res: ChainResult = fut.result()
            except Exception as exc:  # noqa: BLE001 - each file's failure is reported, not raised
                if is_transient(exc) and attempt < RETRIES:
                    delay = retry_delay(attempt)
                    log.warning("%s: %s; retrying in %.0f s", chain.item, one_line(exc), delay)
                    time.sleep(delay)
                    running[rt.submit(run_chain, chain, done)] = (chain, done, attempt + 1)
                    continue
                log.error("%s: %s", chain.item, one_line(exc))
                out[chain.item] = [failed(j, one_line(exc)) for j in chain.jobs() if j.output not in done]
                continue
            log.info(
                "%s: %s",
                chain.item,
                ", ".join(f"{r.stage} {r.status} ({r.seconds or 0:.1f} s)" for r in res.results),
            )
            out[chain.item] = res.results
    return [r for c, _ in todo for r in out[c.item]]


@task(name="File Chains", task_run_name="{label}", cache_policy=NO_CACHE)
def chains_task(todo: list[Todo], label: str) -> State:
    results = run_batch(todo)
    bad = [r for r in results if r.status == "failed"]
    message = f"{len(todo)} file(s): {len(results) - len(bad)} outputs written, {len(bad)} failed"
    if bad:
        return Failed(message=f"{message}; first error: {bad[0].error}", data=results)
    return Completed(message=message, data=results)


def batches(todo: list[Todo], workers: int) -> list[list[Todo]]:
    """About two batches per process, at most FILES_PER_TASK files each."""
    size = min(FILES_PER_TASK, max(1, ceil(len(todo) / (2 * workers))))
    return [todo[i : i + size] for i in range(0, len(todo), size)]


@task(
    name="Group Output",
    task_run_name="{job.stage} {job.item}",
    **TASK_OPTIONS,
)
def reduce_task(job: Job) -> StageResult:
    result = runtime.current().run(run_reduce, job)
    run_logger().info(
        "%s %s: %d files -> %s (%.1f s)", job.stage, job.item, len(job.inputs), result.output, result.seconds or 0
    )
    return result


def pool_size(concurrency: int, n: int) -> int:
    return max(1, min(concurrency or available_cpus(), n))


def in_process(workers: int, n: int) -> bool:
    """Whether n items run in this process: no pool start-up for one item, unless the
    caller already started a pool."""
    return not runtime.current().workers and (workers <= 1 or n <= 1)


@contextmanager
def run_pool(workers: int) -> Iterator[Workers]:
    """The run's worker pool, else a new one of `workers` processes for the block."""
    given = runtime.current().workers
    with nullcontext(given) if given else Workers(workers) as pool, runtime.entered(workers=pool):
        yield pool


def submit_all(fn: Any, calls: list[dict[str, Any]], workers: int) -> Iterator[tuple[int, Any]]:
    """(index, result or exception) for each call, as they finish, on a worker pool when
    there is more than one call (or the caller already started one)."""
    if in_process(workers, len(calls)):
        for i, kw in enumerate(calls):
            state = fn(**kw, return_state=True)
            yield i, _outcome(state)
        return
    with run_pool(workers) as pool, ThreadPoolTaskRunner[Any](max_workers=2 * max(workers, pool.count)) as runner:
        futures: dict[Any, int] = {runner.submit(fn, kw): i for i, kw in enumerate(calls)}
        for fut in as_completed(list(futures)):
            yield futures[fut], _outcome(fut)


def _outcome(run: Any) -> Any:
    try:
        return run.result()
    except Exception as exc:  # noqa: BLE001 - each item's failure is reported, not raised
        return exc


def run_chains(todo: list[Todo], workers: int) -> list[StageResult]:
    if not todo:
        return []
    if in_process(workers, len(todo)):
        return batch_results(chains_task(quote(todo), batch_label(todo), return_state=True), todo)
    out: list[StageResult] = []
    with run_pool(workers) as pool, ThreadPoolTaskRunner[Any](max_workers=BATCHES_IN_FLIGHT) as runner:
        parts = batches(todo, max(workers, pool.count))
        # quote: Prefect would otherwise walk every chain of a batch, looking for futures
        futures: dict[Any, list[Todo]] = {
            runner.submit(chains_task, {"todo": quote(b), "label": batch_label(b)}): b for b in parts
        }
        for fut in as_completed(list(futures)):
            fut.wait()  # holds the final state from here on (`state` alone may ask the API, which may lag)
            out += batch_results(fut.state, futures[fut])
    return out


def batch_results(state: State, batch: list[Todo]) -> list[StageResult]:
    res = state.result(raise_on_failure=False) if state.is_final() else None
    if isinstance(res, list):
        return res
    # the task itself broke, not a file (e.g. the run was cancelled): its files' outputs failed
    why = one_line(res) if isinstance(res, BaseException) else f"task ended {state.type.value}"
    return [failed(j, why) for c, d in batch for j in c.jobs() if j.output not in d]


def run_reduces(jobs: list[Job], workers: int) -> list[StageResult]:
    out = []
    for i, res in submit_all(reduce_task, [{"job": j} for j in jobs], workers):
        out.append(failed(jobs[i], one_line(res)) if isinstance(res, BaseException) else res)
    return out
