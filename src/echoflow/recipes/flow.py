"""`run-recipe`: a recipe's stages as Prefect tasks, in order. Deployment entrypoint:
`echoflow.recipes.flow:run_recipe` (parameters: `recipe` = YAML text or a path / URL to it,
`storage_options` to read that URL, `overwrite`).

open_raw reuses the batch conversion (one task per file; worker processes when there is
enough raw data to pay for starting them); every later stage runs one task per item (a
file, or the combined data) on a thread pool. Tasks pass output paths, never datasets;
an output that is complete and made from the same inputs is skipped.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from echoflow import quicklook, storage
from echoflow.errors import one_line
from echoflow.flows import batch
from echoflow.flows.common import RETRIES, RETRY_DELAYS, retry_transient, run_logger, warn_on_credentials
from echoflow.flows.runs import echoflow_flow, record_recipe, recipe_run_name
from echoflow.params import ConvertRequest
from echoflow.recipes.load import load_recipe, with_env_options
from echoflow.recipes.plan import Job, Plan, is_complete, make_plan
from echoflow.recipes.stages import StageResult, run_job
from echoflow.workers import available_cpus

QUICKLOOK_STAGES = ("compute_Sv", "compute_MVBS")


@task(name="Run Stage", task_run_name="{job.stage} {job.item}", cache_policy=NO_CACHE,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def stage_task(job: Job, overwrite: bool = False) -> StageResult:
    result = run_job(job, overwrite)
    run_logger().info("%s %s %s -> %s (%.1f s)", job.stage, job.item, result.status,
                      result.output, result.seconds or 0)
    return result


@task(name="Quick-look", task_run_name="quick-look {job.stage} {job.item}", cache_policy=NO_CACHE,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def quicklook_task(job: Job, prefix: str, vmin: Optional[float], vmax: Optional[float],
                   redo: bool) -> list[quicklook.Echogram]:
    return quicklook.render(job.output, prefix, job.stage, job.item, job.storage_options,
                            vmin=vmin, vmax=vmax, redo=redo)


def failed(job: Job, error: str) -> StageResult:
    return StageResult(stage=job.stage, item=job.item, status="failed",
                       output=storage.public_url(job.output), error=error)


# Starting a worker process costs seconds (imports); use one per this much raw data only.
BYTES_PER_WORKER = 32 * 1024 * 1024


def open_raw_stage(jobs: list[Job], plan: Plan, overwrite: bool = False) -> list[StageResult]:
    """Convert the raw files with the batch conversion tasks (process pool, retries, markers).
    Complete outputs are skipped without starting any worker. A plain function, not a
    subflow: a subflow's parameters (the recipe, with its storage options) would be stored."""
    recipe = plan.recipe
    done = {j.item for j in jobs if not overwrite and is_complete(j)}
    todo = [j for j in jobs if j.item not in done]
    reqs = [ConvertRequest(raw_file=j.inputs[0], sonar_model=recipe.sonar_model, xml_path=recipe.xml_path,
                           convert_params=j.params.get("convert_params"),
                           input_storage_options=recipe.source.storage_options, output_path=j.output,
                           output_type="zarr", overwrite=True,  # complete ones are not in `todo`
                           output_storage_options=recipe.output.storage_options) for j in todo]
    size = {f.url: f.bytes for f in plan.listing.selected}
    nbytes = sum(size.get(j.inputs[0], 0) for j in todo)
    workers = min(recipe.concurrency or available_cpus(), len(reqs), -(-nbytes // BYTES_PER_WORKER))
    if reqs:
        run_logger().info("open_raw: %d files to convert (%.1f MB) with %d worker process(es); %d complete",
                          len(reqs), nbytes / 1e6, max(workers, 1), len(done))
    by_source = {storage.public_url(j.inputs[0]): j for j in todo}
    out = [StageResult(stage="open_raw", item=j.item, status="skipped", output=storage.public_url(j.output))
           for j in jobs if j.item in done]
    for r in batch.run_files(reqs, max(workers, 1)) if reqs else []:
        job = by_source[r.source]
        out.append(StageResult(stage="open_raw", item=job.item, status=r.status,
                               output=storage.public_url(job.output), bytes=r.bytes,
                               seconds=r.seconds, error=r.error))
    return out


def run_jobs(jobs: list[Job], overwrite: bool, workers: int) -> list[StageResult]:
    """One task per job on a thread pool; a failure is recorded for its item, not raised."""
    results: dict[int, StageResult] = {}
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            state = stage_task(job, overwrite, return_state=True)
            results[i] = _result(job, state)
        return [results[i] for i in range(len(jobs))]
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        futures = {runner.submit(stage_task, {"job": j, "overwrite": overwrite}): i for i, j in enumerate(jobs)}
        for fut in as_completed(list(futures)):
            i = futures[fut]
            results[i] = _result(jobs[i], fut)
    return [results[i] for i in range(len(jobs))]


def _result(job: Job, run: Any) -> StageResult:
    """The task's result from its final state or future (`.result()` waits for the end)."""
    try:
        return run.result()
    except Exception as exc:  # noqa: BLE001 - each item's failure is reported
        return failed(job, one_line(exc))


def run_plan(plan: Plan, overwrite: bool) -> list[tuple[Job, StageResult]]:
    """All stages in order; items whose input failed are marked failed, not run."""
    recipe = plan.recipe
    log = run_logger()
    workers = recipe.concurrency or available_cpus()
    done: list[tuple[Job, StageResult]] = []
    ready: set[str] = set()  # outputs that exist now
    for sp in plan.stages:
        if sp.name == "open_raw":
            got = open_raw_stage(sp.jobs, plan, overwrite)
        else:
            todo = [j for j in sp.jobs if all(i in ready for i in j.inputs)
                    and (not j.echodata or j.echodata in ready)]
            got = run_jobs(todo, overwrite, workers) if todo else []
            got += [failed(j, f"not run: {sum(i not in ready for i in j.inputs)} of its inputs "
                              "failed in an earlier stage") for j in sp.jobs if j not in todo]
        by_item = {r.item: r for r in got}
        for job in sp.jobs:
            res = by_item[job.item]
            done.append((job, res))
            if res.status != "failed":
                ready.add(job.output)
        counts = {s: sum(r.status == s for r in got) for s in ("computed", "converted", "skipped", "failed")}
        log.info("stage %s: %s", sp.name, ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return done


def quicklooks(plan: Plan, done: list[tuple[Job, StageResult]]) -> list[tuple[Job, list[quicklook.Echogram]]]:
    q = plan.recipe.quicklook
    if not q.enabled:
        return []
    out = []
    for job, res in done:
        if job.stage in QUICKLOOK_STAGES and res.status != "failed":
            state = quicklook_task(job, plan.recipe.output.prefix, q.vmin, q.vmax,
                                   redo=res.status == "computed", return_state=True)
            try:
                out.append((job, state.result()))
            except Exception as exc:  # noqa: BLE001 - a picture never fails the processing
                run_logger().warning("quick-look of %s failed: %s", job.output, one_line(exc))
    return out


def artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:120]


def attach(looks: list[tuple[Job, list[quicklook.Echogram]]], plan: Plan) -> int:
    """One markdown artifact linking the echogram PNGs saved next to the outputs (the
    images stay out of Prefect's database); returns how many it links."""
    rows = [(job.stage, job.item, g) for job, grams in looks for g in grams]
    if rows:
        q = plan.recipe.quicklook
        create_markdown_artifact(key=artifact_key("echoflow-quicklooks", plan.recipe.name),
                                 markdown=quicklook.markdown_index(rows, q.vmin, q.vmax),
                                 description=f"echograms of recipe {plan.recipe.name}")
    return len(rows)


def summarize(plan: Plan, results: list[StageResult]) -> State:
    log = run_logger()
    bad = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "computed", "skipped", "failed")}
    headline = (f"recipe {plan.recipe.name}: {len(plan.listing.selected)} files, "
                f"{len(results)} stage outputs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    create_table_artifact(key=artifact_key("echoflow-recipe", plan.recipe.name),
                          table=[r.model_dump() for r in results], description=headline)
    data = {"headline": headline, "results": [r.model_dump() for r in results],
            "files": [f.model_dump(mode="json") for f in plan.listing.selected],
            "undated": [f.model_dump(mode="json") for f in plan.listing.undated]}
    if not bad:
        log.info(headline)
        return Completed(message=headline, data=data)
    for r in bad:
        log.error("failed: %s %s: %s", r.stage, r.item, r.error)
    return Failed(message=f"{headline}; first error: {bad[0].error}", data=data)


@echoflow_flow(name="run-recipe", flow_run_name=recipe_run_name, log_prints=True)
def run_recipe(recipe: str, storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated
               overwrite: bool = False) -> State:
    """Run a processing recipe: per raw file open_raw → compute_Sv → add_depth / add_location →
    compute_MVBS / compute_NASC, then (with combine_echodata) each group's outputs.

    The recipe is checked in full before any data is read, and its text is kept as an
    artifact. Complete outputs are kept unless `overwrite`; the run fails, listing every
    failed output, when any stage fails.

    Args:
        recipe: The recipe: YAML text, or a path / URL to a YAML file (see docs/recipes.md).
        storage_options: fsspec options for reading the recipe URL (no credentials: use the environment).
        overwrite: Recompute outputs that are already complete.
        fan_out: Run chunks of files, then each group, as child runs (default: when run from a deployment).
        files_per_job: Files per child run (one Kubernetes Job each).
        part_deployment: Deployment of the child runs (default run-recipe-part/<this deployment's name>).
        job_variables: Work-pool job variables for the child runs (e.g. resources).
        poll_seconds: Seconds between checks on the child runs.
    """
    log = run_logger()
    as_given = load_recipe(recipe, storage_options, env=False)
    record_recipe(recipe, storage_options)
    warn_on_credentials(storage_options, as_given.source.storage_options, as_given.output.storage_options)
    rec = with_env_options(as_given)
    storage.check_writable(rec.output.prefix, rec.output.storage_options)
    plan = make_plan(rec)
    log.info("%s: %s", plan.listing.folder, plan.listing.headline())
    for f in plan.listing.undated:
        log.warning("left out (no time in its name, cannot be placed in the window): %s", f.url)
    log.info("stages: %s", " → ".join(s.name for s in plan.stages))
    done = run_plan(plan, overwrite)
    attach(quicklooks(plan, done), plan)
    return summarize(plan, [r for _, r in done])
