"""`run-recipe`: a recipe as one chain per raw file on worker processes, then the
cross-file outputs of each group. Deployment entrypoint: `echoflow.recipes.flow:run_recipe`.

Run here (the CLI, a script), the chains go to a pool of echopype-only worker processes,
two tasks queued per process. Run from a deployment (Kubernetes), chunks of
`files_per_job` files become child runs of the same deployment (one Job each, on the
`conversions` work queue and under its limit), then each group's outputs become one more
child run (see fanout.py). Complete outputs made from the same inputs are skipped before
anything starts.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State

from echoflow import quicklook, storage
from echoflow.errors import ParameterError, one_line
from echoflow.flows.arguments import documented
from echoflow.flows.common import TASK_OPTIONS, run_logger, warn_on_credentials
from echoflow.flows.runs import echoflow_flow, recipe_run_name, record_recipe
from echoflow.recipes import fanout
from echoflow.recipes.load import load_recipe, with_env_options
from echoflow.recipes.plan import Job, Plan, complete, is_done, make_plan
from echoflow.recipes.stages import StageResult
from echoflow.recipes.status import complete_groups, group_jobs, report, skipped
from echoflow.recipes.tasks import pool_size, run_chains, run_reduces

QUICKLOOK_STAGES = ("compute_Sv", "compute_MVBS")


@task(
    name="Quick-look",
    task_run_name="quick-look {job.stage} {job.item}",
    **TASK_OPTIONS,
)
def quicklook_task(
    job: Job, prefix: str, vmin: Optional[float], vmax: Optional[float], redo: bool
) -> list[quicklook.Echogram]:
    return quicklook.render(
        job.output, prefix, job.stage, job.item, job.storage_options, vmin=vmin, vmax=vmax, redo=redo
    )


def quicklooks(plan: Plan, results: list[StageResult]) -> list[tuple[Job, list[quicklook.Echogram]]]:
    """Echograms of the Sv and MVBS outputs: the groups' when there are any, else each file's."""
    q = plan.recipe.quicklook
    if not q.enabled:
        return []
    files = {c.item for c in plan.chains}
    out = []
    for r in results:
        if r.stage not in QUICKLOOK_STAGES or r.status == "failed" or (plan.cross and r.item in files):
            continue
        job = Job(
            stage=r.stage,
            item=r.item,
            params={},
            inputs=[],
            output=r.output,
            fingerprint="",
            sonar_model=plan.recipe.sonar_model,
            storage_options=plan.recipe.output.storage_options,
        )
        state = quicklook_task(
            job, plan.recipe.output.prefix, q.vmin, q.vmax, redo=r.status == "computed", return_state=True
        )
        try:
            out.append((job, state.result()))
        except Exception as exc:  # noqa: BLE001 - a picture never fails the processing
            run_logger().warning("quick-look of %s failed: %s", r.output, one_line(exc))
    return out


def artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:120]


def attach(looks: list[tuple[Job, list[quicklook.Echogram]]], plan: Plan) -> int:
    """One markdown artifact linking the echogram PNGs saved next to the outputs (the
    images stay out of Prefect's database); returns how many it links."""
    rows = [(job.stage, job.item, g) for job, grams in looks for g in grams]
    if rows:
        q = plan.recipe.quicklook
        create_markdown_artifact(
            key=artifact_key("echoflow-quicklooks", plan.recipe.name),
            markdown=quicklook.markdown_index(rows, q.vmin, q.vmax),
            description=f"echograms of recipe {plan.recipe.name}",
        )
    return len(rows)


def summarize(plan: Plan, results: list[StageResult]) -> State:
    log = run_logger()
    bad = [r for r in results if r.status == "failed"]
    data = report(plan, results)
    headline = data["headline"]
    create_table_artifact(
        key=artifact_key("echoflow-recipe", plan.recipe.name), table=data["results"], description=headline
    )
    if not bad:
        log.info(headline)
        return Completed(message=headline, data=data)
    for r in bad:
        log.error("failed: %s %s: %s", r.stage, r.item, r.error)
    return Failed(message=f"{headline}; first error: {bad[0].error}", data=data)


@echoflow_flow(name="run-recipe", flow_run_name=recipe_run_name, log_prints=True)
@documented()
def run_recipe(
    recipe: str,
    storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated
    overwrite: bool = False,
    fan_out: Optional[bool] = None,
    files_per_job: int = 50,
    deployment: Optional[str] = None,
    work_queue: Optional[str] = "conversions",
    job_variables: dict[str, Any] = {},  # noqa: B006 - never mutated
    poll_seconds: float = 10.0,
    part: dict[str, list[str]] = {},  # noqa: B006
) -> State:
    """Run a processing recipe: per raw file open_raw → compute_Sv → add_depth / add_location →
    compute_MVBS / compute_NASC, then (with combine_echodata) each group's outputs.

    The recipe is checked in full before any data is read, and its text is kept as an
    artifact. Complete outputs are kept unless `overwrite`; the run fails, listing every
    failed output, when any stage fails.
    """
    log = run_logger()
    as_given = load_recipe(recipe, storage_options, env=False)
    record_recipe(recipe, storage_options)
    warn_on_credentials(storage_options, as_given.source.storage_options, as_given.output.storage_options)
    if files_per_job < 1:
        raise ParameterError(f"files_per_job must be at least 1, got {files_per_job}")
    rec = with_env_options(as_given)
    storage.check_writable(rec.output.prefix, rec.output.storage_options)
    plan = make_plan(rec)
    records = complete(plan, overwrite)
    if part:
        return fanout.run_part(plan, records, overwrite, part)
    log.info("%s: %s", plan.listing.folder, plan.listing.headline())
    for f in plan.listing.undated:
        log.warning("left out (no time in its name, cannot be placed in the window): %s", f.url)
    log.info(plan.describe())
    if fan_out is not False and not deployment:
        deployment = fanout.this_deployment()
    if fan_out and not deployment:
        raise ParameterError("fan_out needs a deployment for the child runs (run from one, or pass deployment)")
    fan = (deployment, work_queue, job_variables, poll_seconds) if fan_out is not False and deployment else None
    child = dict(recipe=recipe, storage_options=storage_options, overwrite=overwrite)

    results: list[StageResult] = []
    todo = []
    for c in plan.chains:
        results += [skipped(j, records) for j in c.jobs() if is_done(j, records)]
        todo += [t for t in [fanout.pending(c, records)] if t is not None]
    log.info(
        "%d of %d files to process%s",
        len(todo),
        len(plan.chains),
        f" in child runs of {deployment}" if fan and todo else "",
    )
    if fan:
        results += fanout.fan_out(child, fanout.file_parts(todo, files_per_job), *fan)
    else:
        results += run_chains(todo, pool_size(rec.concurrency, len(todo)))
    results += cross_file(plan, results, overwrite, child, fan)
    attach(quicklooks(plan, results), plan)
    return summarize(plan, results)


def cross_file(
    plan: Plan, results: list[StageResult], overwrite: bool, child: dict[str, Any], fan: Optional[tuple[Any, ...]]
) -> list[StageResult]:
    """Each group's outputs, once every file's chain is through; none when a file failed
    (a group output would silently miss that file's data)."""
    if not plan.cross:
        return []
    bad = {r.item for r in results if r.status == "failed"}
    if bad:
        why = f"not run: {len(bad)} file(s) failed"
        return [StageResult(stage=s, item=plan.recipe.name, status="failed", output="", error=why) for s in plan.cross]
    groups, jobs = group_jobs(plan, complete(plan))
    done = complete_groups(plan, jobs, overwrite)
    todo = [j for j in jobs if not is_done(j, done)]
    log = run_logger()
    log.info(
        "%d group(s): %s; %d output(s) to make",
        len(groups),
        ", ".join(f"{g.name} ({len(g.items)} files)" for g in groups[:20]),
        len(todo),
    )
    outside = sorted({c.item for c in plan.chains} - {i for g in groups for i in g.items})
    if outside:
        log.warning(
            "%d file(s) are in no group (no transect of the schedule holds them): %s",
            len(outside),
            ", ".join(outside[:10]),
        )
    out = [skipped(j, done) for j in jobs if is_done(j, done)]
    if fan:
        return out + fanout.fan_out(child, fanout.group_parts(todo), *fan)
    return out + run_reduces(todo, pool_size(plan.recipe.concurrency, len(todo)))
