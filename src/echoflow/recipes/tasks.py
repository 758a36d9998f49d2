"""The recipe's Prefect tasks: one per file chain, one per group output, on worker processes.

Tasks run on threads of the flow's process and hand the echopype work to the worker pool
(`echoflow.workers`, the one `convert` uses), so this process never holds a file's data.
Twice as many task threads as processes keep a file queued for every process.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterator, TypeVar

from prefect import task
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from echoflow import runtime
from echoflow.errors import one_line
from echoflow.flows.common import TASK_OPTIONS, run_logger
from echoflow.recipes.chain import ChainResult, failed, run_chain
from echoflow.recipes.plan import FileChain, Job
from echoflow.recipes.reduce import run_reduce
from echoflow.recipes.stages import StageResult
from echoflow.workers import Workers, available_cpus

T = TypeVar("T")


def on_worker(fn: Callable[..., T], *args: Any) -> T:
    workers = runtime.current().workers
    return workers.run(fn, *args) if workers else fn(*args)


@task(
    name="File Chain",
    task_run_name="chain {chain.item}",
    **TASK_OPTIONS,
)
def chain_task(chain: FileChain, done: list[str]) -> ChainResult:
    result = on_worker(run_chain, chain, done)
    run_logger().info(
        "%s: %s", chain.item, ", ".join(f"{r.stage} {r.status} ({r.seconds or 0:.1f} s)" for r in result.results)
    )
    return result


@task(
    name="Group Output",
    task_run_name="{job.stage} {job.item}",
    **TASK_OPTIONS,
)
def reduce_task(job: Job) -> StageResult:
    result = on_worker(run_reduce, job)
    run_logger().info(
        "%s %s: %d files -> %s (%.1f s)", job.stage, job.item, len(job.inputs), result.output, result.seconds or 0
    )
    return result


def pool_size(concurrency: int, n: int) -> int:
    return max(1, min(concurrency or available_cpus(), n))


def submit_all(fn: Any, calls: list[dict[str, Any]], workers: int) -> Iterator[tuple[int, Any]]:
    """(index, result or exception) for each call, as they finish, on a worker pool when
    there is more than one call (or the caller already started one)."""
    given = runtime.current().workers
    if not given and (workers <= 1 or len(calls) <= 1):
        for i, kw in enumerate(calls):  # in this process: no pool start-up for one item
            state = fn(**kw, return_state=True)
            yield i, _outcome(state)
        return
    with (
        nullcontext(given) if given else Workers(workers) as pool,
        runtime.entered(workers=pool),
        ThreadPoolTaskRunner[Any](max_workers=2 * max(workers, pool.count)) as runner,
    ):
        futures: dict[Any, int] = {runner.submit(fn, kw): i for i, kw in enumerate(calls)}
        for fut in as_completed(list(futures)):
            yield futures[fut], _outcome(fut)


def _outcome(run: Any) -> Any:
    try:
        return run.result()
    except Exception as exc:  # noqa: BLE001 - each item's failure is reported, not raised
        return exc


def run_chains(todo: list[tuple[FileChain, list[str]]], workers: int) -> list[StageResult]:
    out: list[StageResult] = []
    calls = [{"chain": c, "done": d} for c, d in todo]
    for i, res in submit_all(chain_task, calls, workers):
        chain, done = todo[i]
        if isinstance(res, BaseException):
            out += [failed(j, one_line(res)) for j in chain.jobs() if j.output not in done]
        else:
            out += res.results
    return out


def run_reduces(jobs: list[Job], workers: int) -> list[StageResult]:
    out = []
    for i, res in submit_all(reduce_task, [{"job": j} for j in jobs], workers):
        out.append(failed(jobs[i], one_line(res)) if isinstance(res, BaseException) else res)
    return out
