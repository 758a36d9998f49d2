"""Where a recipe stands, without Prefect: which outputs are complete, the groups, the report.

The flow uses these between its steps; the CLI uses them first, so a re-run over complete
outputs answers from one listing per stage folder without starting a flow run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from echoflow import storage
from echoflow.recipes.groups import Group, Span, make_groups
from echoflow.recipes.plan import Job, Plan, complete, fingerprint, is_done, reduce_input, stage_output
from echoflow.recipes.stages import StageResult


def spans(plan: Plan, records: dict[str, dict[str, Any]], stage: str) -> list[Span]:
    """Each file's data time span, from the markers of its `stage` outputs."""
    out = []
    for c in plan.chains:
        job = next((j for j in c.jobs() if j.stage == stage), None)
        rec = records.get(job.output) if job and is_done(job, records) else None
        if rec and rec.get("first_ping") and rec.get("last_ping"):
            out.append(
                Span(
                    item=c.item,
                    first=datetime.fromisoformat(rec["first_ping"]),
                    last=datetime.fromisoformat(rec["last_ping"]),
                )
            )
    return out


def group_jobs(plan: Plan, records: dict[str, dict[str, Any]]) -> tuple[list[Group], list[Job]]:
    """The groups (from the files' times) and one output per group and cross-file stage."""
    rec = plan.recipe
    if not plan.cross:
        return [], []
    first = reduce_input(rec, plan.cross[0])
    groups, _ = make_groups(rec, spans(plan, records, first))  # files in no transect: no group
    chains = {c.item: {j.stage: j for j in c.jobs()} for c in plan.chains}
    jobs = []
    for g in groups:
        for stage in plan.cross:
            parts = [chains[i][reduce_input(rec, stage)] for i in g.items]
            params = rec.stage(stage).model_dump(exclude_none=True)
            jobs.append(
                Job(
                    stage=stage,
                    item=g.name,
                    params=params,
                    inputs=[p.output for p in parts],
                    output=stage_output(rec, stage, g.name),
                    sonar_model=rec.sonar_model,
                    storage_options=rec.output.storage_options,
                    fingerprint=fingerprint(
                        stage=stage, params=params, group=g.name, inputs=[p.fingerprint for p in parts]
                    ),
                )
            )
    return groups, jobs


def complete_groups(plan: Plan, jobs: list[Job], overwrite: bool) -> dict[str, dict[str, Any]]:
    if overwrite or not jobs:
        return {}
    prefix = plan.recipe.output.prefix.rstrip("/")
    out: dict[str, dict[str, Any]] = {}
    for stage in plan.cross:
        out.update(
            storage.complete_outputs(
                f"{prefix}/{stage}", [j.output for j in jobs if j.stage == stage], plan.recipe.output.storage_options
            )
        )
    return out


def skipped(job: Job, records: Optional[dict[str, dict[str, Any]]] = None) -> StageResult:
    rec = (records or {}).get(job.output) or {}
    return StageResult(
        stage=job.stage, item=job.item, status="skipped", output=storage.public_url(job.output), bytes=rec.get("bytes")
    )


def report(plan: Plan, results: list[StageResult]) -> dict[str, Any]:
    """The run's result: a headline, every output's row, the files."""
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "computed", "skipped", "failed")}
    headline = (
        f"recipe {plan.recipe.name}: {len(plan.listing.selected)} files, "
        f"{len(results)} stage outputs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    )
    return {
        "headline": headline,
        "results": [r.model_dump() for r in results],
        "files": [f.model_dump(mode="json") for f in plan.listing.selected],
        "undated": [f.model_dump(mode="json") for f in plan.listing.undated],
    }


def standing(plan: Plan) -> tuple[Optional[list[StageResult]], int]:
    """(every output as skipped, when all are complete, else None; files with work to do)."""
    records = complete(plan)
    todo = sum(not all(is_done(j, records) for j in c.jobs()) for c in plan.chains)
    if todo:
        return None, todo
    results = [skipped(j, records) for c in plan.chains for j in c.jobs()]
    if plan.cross:
        _, groups = group_jobs(plan, records)
        done = complete_groups(plan, groups, False)
        if not groups or not all(is_done(j, done) for j in groups):
            return None, 0
        results += [skipped(j, done) for j in groups]
    return results, 0
