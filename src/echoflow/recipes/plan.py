"""From a recipe to the work: which raw files, and for each stage which output from which
inputs. Planning reads listings and completion markers only; it writes nothing.

Outputs are `<output.prefix>/<stage>/<item>.zarr`, where an item is one raw file (named
by its stem) or, after combine_echodata, the recipe's `name`. Each output's marker holds
a fingerprint of everything it was made from (stage parameters, the fingerprints of its
inputs, the echopype version), so a complete output is reused only when it is the output
this recipe asks for; changing a parameter recomputes that stage and those after it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from pydantic import BaseModel

from echoflow import discover, storage
from echoflow.errors import InputNotFound, ParameterError
from echoflow.recipes.model import Recipe, wiring

EXT = ".zarr"


def fingerprint(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Job(BaseModel):
    """One stage on one item: paths in, path out (datasets never travel between tasks)."""

    stage: str
    item: str
    params: dict[str, Any]
    inputs: list[str]
    echodata: Optional[str] = None  # add_depth / add_location read the EchoData too
    output: str
    fingerprint: str
    sonar_model: str
    storage_options: dict[str, Any] = {}


class StagePlan(BaseModel):
    name: str
    jobs: list[Job]


class Plan(BaseModel):
    recipe: Recipe
    listing: discover.Listing
    stages: list[StagePlan]

    def outputs(self, stage: str) -> list[str]:
        return [j.output for s in self.stages if s.name == stage for j in s.jobs]


def stage_output(recipe: Recipe, stage: str, item: str) -> str:
    return f"{recipe.output.prefix.rstrip('/')}/{stage}/{item}{EXT}"


def list_source(recipe: Recipe) -> discover.Listing:
    s = recipe.source
    return discover.list_raw(s.folder(), s.pattern or discover.default_pattern(recipe.sonar_model),
                             s.storage_options, s.start, s.end)


def make_plan(recipe: Recipe) -> Plan:
    """Every job of every stage, in order. Raises when the source holds nothing to process."""
    from echoflow._echopype import load

    listing = list_source(recipe)
    if not listing.selected:
        raise InputNotFound(f"{listing.folder}: nothing to process ({listing.headline()}; "
                            f"pattern {listing.pattern!r})")
    stems: dict[str, str] = {}
    for f in listing.selected:
        other = stems.setdefault(storage.stem(f.url), f.url)
        if other != f.url:
            raise ParameterError(f"{f.name} and {storage.shown(other)} would share the output "
                                 f"{storage.stem(f.url)}{EXT}; narrow source.pattern")
    links, _ = wiring(recipe.stages)
    opts = recipe.output.storage_options
    common = dict(sonar_model=recipe.sonar_model, storage_options=opts)
    xml = storage.public_url(recipe.xml_path) if recipe.xml_path else None
    version = load().__version__

    plans: list[StagePlan] = []
    echodata_jobs: dict[str, Job] = {}  # item -> job whose output is that item's EchoData
    for i, (st, link) in enumerate(zip(recipe.stages, links)):
        params = st.params.model_dump(exclude_none=True)
        jobs: list[Job] = []
        if st.name == "open_raw":
            for f in listing.selected:
                item = storage.stem(f.url)
                fp = fingerprint(stage=st.name, source=storage.public_url(f.url), xml=xml, **params,
                                 sonar_model=recipe.sonar_model)
                jobs.append(Job(stage=st.name, item=item, params=params, inputs=[f.url],
                                output=stage_output(recipe, st.name, item), fingerprint=fp, **common))
        elif st.name == "combine_echodata":
            parts = plans[link.input].jobs
            fp = fingerprint(stage=st.name, params=params, inputs=[j.fingerprint for j in parts],
                             echopype=version)
            jobs.append(Job(stage=st.name, item=recipe.name, params=params,
                            inputs=[j.output for j in parts],
                            output=stage_output(recipe, st.name, recipe.name), fingerprint=fp, **common))
        else:
            for src in plans[link.input].jobs:
                eds = echodata_jobs.get(src.item) if st.name.startswith("add_") else None
                fp = fingerprint(stage=st.name, params=params, input=src.fingerprint,
                                 echodata=eds.fingerprint if eds else None, echopype=version)
                jobs.append(Job(stage=st.name, item=src.item, params=params, inputs=[src.output],
                                echodata=eds.output if eds else None,
                                output=stage_output(recipe, st.name, src.item), fingerprint=fp, **common))
        if link.kind == "echodata":
            echodata_jobs = {j.item: j for j in jobs}
        plans.append(StagePlan(name=st.name, jobs=jobs))
    return Plan(recipe=recipe, listing=listing, stages=plans)


def is_complete(job: Job) -> bool:
    """Whether the job's output is complete and was made from what this job would use."""
    record = storage.read_marker(job.output, job.storage_options)
    if record is None:
        return False
    if job.stage == "open_raw":  # written by echoflow.convert: its own record
        return record.get("source_url") == storage.public_url(job.inputs[0]) and \
            record.get("sonar_model") == job.sonar_model
    return record.get("fingerprint") == job.fingerprint
