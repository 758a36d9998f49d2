"""What a recipe will do: one chain of stages per raw file, then cross-file outputs per group.

Every stage but `combine_echodata` runs per file, in one chain, with the data in memory.
A chain writes the outputs the recipe asks for: its last stage, the stages in `keep`, and
what the cross-file step reads. With `combine_echodata`, the last stage (and the combined
EchoData when kept) also gets one output per group of files, made from the per-file outputs.
Planning reads the source listing only; it writes nothing.

Outputs are `<output.prefix>/<stage>/<item>.zarr`, where an item is a raw file (its stem)
or a group (the recipe's `name`, or a transect's). Each output's marker holds a
fingerprint of everything it was made from (stage parameters, its inputs' fingerprints,
the echopype version), so a complete output is reused only when it is the output this
recipe asks for; changing a parameter recomputes that stage and those after it.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from typing import Any, Optional

from pydantic import BaseModel

from echoflow import discover, storage
from echoflow.errors import InputNotFound, ParameterError
from echoflow.recipes.model import Recipe
from echoflow.recipes.wiring import wiring

EXT = ".zarr"
COMBINE = "combine_echodata"


def fingerprint(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Job(BaseModel):
    """One output: a stage on an item (a file, or a group of files)."""

    stage: str
    item: str
    params: dict[str, Any]
    inputs: list[str]
    output: str
    fingerprint: str
    sonar_model: str
    storage_options: dict[str, Any] = {}


class Step(BaseModel):
    """One stage of a file's chain; `input` is the step whose dataset it reads."""

    stage: str
    params: dict[str, Any]
    input: Optional[int] = None
    output: Optional[str] = None  # None: the result stays in memory
    fingerprint: str


class FileChain(BaseModel):
    """Everything a worker process needs to take one raw file through its stages."""

    item: str
    source: str
    bytes: int = 0
    sonar_model: str
    xml_path: Optional[str] = None
    source_options: dict[str, Any] = {}
    output_options: dict[str, Any] = {}
    steps: list[Step]

    def jobs(self) -> list[Job]:
        out = []
        for i, s in enumerate(self.steps):
            if s.output:
                src = self.source if i == 0 else self.steps[s.input or 0].output or self.source
                out.append(
                    Job(
                        stage=s.stage,
                        item=self.item,
                        params=s.params,
                        inputs=[src],
                        output=s.output,
                        fingerprint=s.fingerprint,
                        sonar_model=self.sonar_model,
                        storage_options=self.output_options,
                    )
                )
        return out


class StagePlan(BaseModel):
    name: str
    jobs: list[Job]


class Plan(BaseModel):
    recipe: Recipe
    listing: discover.Listing
    chains: list[FileChain]
    cross: list[str]  # stages with one output per group (empty without combine_echodata)

    @property
    def stages(self) -> list[StagePlan]:
        """The per-file outputs, stage by stage (group outputs depend on the data's times)."""
        by: dict[str, list[Job]] = {}
        for c in self.chains:
            for j in c.jobs():
                by.setdefault(j.stage, []).append(j)
        return [StagePlan(name=s, jobs=by[s]) for s in self.recipe.stage_names if s in by]

    def describe(self) -> str:
        """What runs where, in one line: the per-file chain, what it writes, the group step."""
        steps = self.chains[0].steps
        text = (
            f"per file: {' → '.join(s.stage for s in steps)} (in memory; written: "
            f"{', '.join(s.stage for s in steps if s.output)})"
        )
        if self.cross:
            g = self.recipe.groups
            how = (
                "one group"
                if g is None
                else (
                    f"groups by transect schedule {g.schedule}"
                    if g.schedule
                    else f"a new group after each pause longer than {g.gap}"
                )
            )
            text += f"; after {COMBINE}, per group ({how}): {', '.join(self.cross)}"
        return text

    def outputs(self, stage: str) -> list[str]:
        return [j.output for s in self.stages if s.name == stage for j in s.jobs]


def stage_output(recipe: Recipe, stage: str, item: str) -> str:
    return f"{recipe.output.prefix.rstrip('/')}/{stage}/{item}{EXT}"


def list_source(recipe: Recipe) -> discover.Listing:
    s = recipe.source
    return discover.list_raw(
        s.folder(), s.pattern or discover.default_pattern(recipe.sonar_model), s.storage_options, s.start, s.end
    )


def cross_stages(recipe: Recipe) -> list[str]:
    names = recipe.stage_names
    if COMBINE not in names:
        return []
    last = names[-1]
    return ([COMBINE] if COMBINE in recipe.keep and last != COMBINE else []) + [last]


def reduce_input(recipe: Recipe, stage: str) -> str:
    """The per-file stage whose outputs a group output is made from."""
    names = [n for n in recipe.stage_names if n != COMBINE]
    if stage == COMBINE:
        return "open_raw"
    if stage == "compute_NASC":  # distance runs across files: NASC is computed on the joined input
        links, _ = wiring(recipe.stages)
        return recipe.stage_names[links[recipe.stage_names.index(stage)].input or 0]
    return stage if stage in names else names[-1]


def make_plan(recipe: Recipe) -> Plan:
    """Every file's chain. Raises when the source holds nothing to process."""
    listing = list_source(recipe)
    if not listing.selected:
        raise InputNotFound(f"{listing.folder}: nothing to process ({listing.headline()}; pattern {listing.pattern!r})")
    stems: dict[str, str] = {}
    for f in listing.selected:
        other = stems.setdefault(storage.stem(f.url), f.url)
        if other != f.url:
            raise ParameterError(
                f"{f.name} and {storage.shown(other)} would share the output "
                f"{storage.stem(f.url)}{EXT}; narrow source.pattern"
            )
    if recipe.name in stems and COMBINE in recipe.stage_names:
        raise ParameterError(
            f"the recipe's name {recipe.name!r} is also a file's name; their outputs would collide: choose another name"
        )
    links, _ = wiring(recipe.stages)
    cross = cross_stages(recipe)
    written = set(recipe.keep) | {recipe.stage_names[-1]} | {reduce_input(recipe, s) for s in cross}
    xml = storage.public_url(recipe.xml_path) if recipe.xml_path else None
    echopype = version("echopype")  # not the import: planning never waits for echopype
    chains = []
    for f in listing.selected:
        item = storage.stem(f.url)
        steps: list[Step] = []
        index: dict[int, int] = {}  # recipe stage index -> step index
        for i, (st, link) in enumerate(zip(recipe.stages, links)):
            if st.name == COMBINE:
                index[i] = index[link.input or 0]
                continue
            params = st.params.model_dump(exclude_none=True)
            src = index.get(link.input) if link.input is not None else None
            fp = fingerprint(
                stage=st.name,
                params=params,
                echopype=echopype,
                input=steps[src].fingerprint if src is not None else None,
                echodata=steps[0].fingerprint if steps else None,
                **(
                    {"source": storage.public_url(f.url), "xml": xml, "sonar_model": recipe.sonar_model}
                    if st.name == "open_raw"
                    else {}
                ),
            )
            out = stage_output(recipe, st.name, item) if st.name in written else None
            index[i] = len(steps)
            steps.append(Step(stage=st.name, params=params, input=src, output=out, fingerprint=fp))
        chains.append(
            FileChain(
                item=item,
                source=f.url,
                bytes=f.bytes,
                sonar_model=recipe.sonar_model,
                xml_path=recipe.xml_path,
                source_options=recipe.source.storage_options,
                output_options=recipe.output.storage_options,
                steps=steps,
            )
        )
    return Plan(recipe=recipe, listing=listing, chains=chains, cross=cross)


def complete(plan: Plan, overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Completion records of the plan's per-file outputs: one listing per stage folder."""
    if overwrite:
        return {}
    out: dict[str, dict[str, Any]] = {}
    prefix = plan.recipe.output.prefix.rstrip("/")
    for sp in plan.stages:
        out.update(
            storage.complete_outputs(
                f"{prefix}/{sp.name}", [j.output for j in sp.jobs], plan.recipe.output.storage_options
            )
        )
    return out


def is_done(job: Job, records: dict[str, dict[str, Any]]) -> bool:
    return (records.get(job.output) or {}).get("fingerprint") == job.fingerprint


def is_complete(job: Job) -> bool:
    """Whether the job's output is complete and was made from what this job would use."""
    record = storage.read_marker(job.output, job.storage_options)
    return record is not None and record.get("fingerprint") == job.fingerprint
