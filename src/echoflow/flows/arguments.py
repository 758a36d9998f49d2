"""One text per flow parameter, and one way from a flow's arguments to its request model.

Prefect reads a flow's parameter descriptions from the `Args:` section of its docstring
(the UI's run form, a deployment's schema); `documented` writes that section from this
table, so a parameter shared by several flows is described once.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

CHILD_CONCURRENCY = "Worker processes in each child run (0: one per available CPU)."
PARAMETERS: dict[str, str] = {
    "raw_file": "The raw file: a path, s3:// or https:// URL.",
    "sources": "Raw files: paths, s3:// or https:// URLs, globs (archive prefixes too), or text manifests "
    "(ending in .txt/.lst/.manifest or prefixed with '@').",
    "source": "Folder, glob or s3:// prefix the ship uploads to (a folder: the files directly in it).",
    "sonar_model": "Instrument model as echopype names it: EK60, EK80, ES70, ES80, EA640, AZFP, AD2CP.",
    "output_path": "The output (ending in .nc or .zarr), or a folder / s3:// prefix for it.",
    "output_prefix": "Output folder or s3:// prefix; each output is <output_prefix>/<stem>.zarr or .nc.",
    "output_type": "zarr or netcdf.",
    "xml_path": "Instrument XML file (AZFP only).",
    "convert_params": "Extra keyword arguments for echopype's open_raw.",
    "concurrency": "Worker processes (0: one per available CPU).",
    "overwrite": "Redo outputs that are already complete.",
    "input_storage_options": "fsspec options for reading the raw files (no credentials: use the environment).",
    "output_storage_options": "fsspec options for writing outputs (no credentials: use the environment).",
    "files_per_job": "Files per child run (one Kubernetes Job each).",
    "batch_deployment": "Deployment that runs each chunk; None runs the chunks here as subflows.",
    "job_variables": "Work-pool job variables for the child runs (e.g. resources).",
    "poll_seconds": "Seconds between checks on the child runs.",
    "settle_seconds": "Seconds a file must be unchanged (size, mtime/ETag) before it is taken.",
    "ready_suffix": "Take a file only when `<name><ready_suffix>` is listed too (e.g. .done).",
    "retry_failed": "Retry files that failed before even though they have not changed.",
    "recipe": "The recipe: YAML text, or a path / URL to a YAML file (see docs/recipes.md).",
    "storage_options": "fsspec options for reading the recipe URL (no credentials: use the environment).",
    "fan_out": "Run chunks of files, then each group, as child runs (default: when run from a deployment).",
    "deployment": "Deployment of the child runs (default: the one this run came from).",
    "work_queue": "Work queue of the child runs; its concurrency limit caps how many run at once.",
    "part": 'Set by a fanned-out parent on its child runs: {"files": [...]} or {"groups": [...]}.',
}


def documented(**specific: str) -> Callable[[F], F]:
    """Append the `Args:` section for the function's parameters: PARAMETERS, or `specific`
    where this flow means something more by a name."""

    def wrap(fn: F) -> F:
        names = inspect.signature(fn).parameters
        args = "\n".join(f"    {name}: {specific.get(name) or PARAMETERS[name]}" for name in names)
        fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\nArgs:\n{args}\n"
        return fn

    return wrap


def given(model: type[BaseModel], arguments: dict[str, Any]) -> dict[str, Any]:
    """The model's fields among a flow's arguments (`locals()` at its top), as the caller gave
    them: the flows' parameters carry the models' field names (tests/flows/test_parameters.py)."""
    return {name: arguments[name] for name in model.model_fields if name in arguments}


def request(model: type[M], arguments: dict[str, Any]) -> M:
    """The flow's request model from its arguments (see `given`)."""
    return model(**given(model, arguments))
