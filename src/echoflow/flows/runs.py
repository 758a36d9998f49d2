"""How echoflow's flows run when called from Python, and what the UI shows of them.

Called from a script or a notebook, a flow records on the same API as the CLI (the
user's configured Prefect, else the local API under ECHOFLOW_HOME), and its worker
processes never re-run the caller's script. Run names say what ran
(`convert-batch · DY1801 · 24 files`), task names show short source names.
"""

from __future__ import annotations

import multiprocessing
import posixpath
import sys
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from prefect import Flow
from prefect.context import FlowRunContext, TaskRunContext

F = TypeVar("F", bound=Callable[..., Any])
SEP = " · "


@contextmanager
def detached_main() -> Iterator[None]:
    """Hide the caller's `__main__` from multiprocessing while a flow runs.

    spawn starts each worker by re-running the parent's main script (or module); a script
    without `if __name__ == "__main__":` would then call the flow again in every worker.
    The workers only run echoflow's own functions, so they need nothing from `__main__`.
    """
    main = sys.modules.get("__main__")
    if main is None or multiprocessing.parent_process() is not None:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class EchoflowFlow(Flow):
    """A Prefect flow that, called from Python outside any run, first connects to echoflow's API."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            return super().__call__(*args, **kwargs)  # a subflow: the parent chose the API
        from echoflow import home

        first = home.connected() is None
        api = home.connect()
        if first:  # say once, as the CLI does, where this process records its runs
            print(f"echoflow: runs recorded in {api.describe()}", file=sys.stderr)
        with detached_main():
            return super().__call__(*args, **kwargs)


def echoflow_flow(**options: Any) -> Callable[[F], Any]:
    """`@flow(...)` for echoflow's flows (same options)."""
    return lambda fn: EchoflowFlow(fn, **options)


def short(url: str) -> str:
    """A source's file name: what a person looks for in a list of runs."""
    return posixpath.basename(str(url).rstrip("/")) or str(url)


def stem(url: str) -> str:
    name = short(url)
    return name.rsplit(".", 1)[0] if "." in name else name


def _params() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def _files(sources: list[str]) -> str | None:
    """'24 files' or the one file's stem; None when globs/manifests hide the count."""
    from echoflow.storage import is_glob, is_manifest

    if any(is_glob(s) or is_manifest(s) for s in sources):
        return None
    return stem(sources[0]) if len(sources) == 1 else f"{len(sources)} files"


def _batch_like(flow_name: str) -> Callable[[], str]:
    def name() -> str:
        p = _params()
        sources = list(p.get("sources") or [])
        parts = [flow_name, short(p.get("output_prefix", ""))]
        files = _files(sources) if sources else None
        return SEP.join(parts + ([files] if files else []))

    return name


batch_run_name = _batch_like("convert-batch")
cruise_run_name = _batch_like("convert-cruise")


def convert_run_name() -> str:
    return SEP.join(["convert-raw-sonar", stem(_params().get("raw_file", ""))])


def recipe_run_name() -> str:
    """`run-recipe · <the recipe's name>` (its file's stem when the text cannot be read)."""
    p = _params()
    recipe = str(p.get("recipe", ""))
    try:
        from echoflow.recipes.load import read_text

        text, _ = read_text(recipe, p.get("storage_options") or None)
    except Exception:  # noqa: BLE001 - the run reports an unreadable recipe itself
        text = ""
    names = [ln.split(":", 1)[1].strip().strip("'\"") for ln in text.splitlines() if ln.startswith("name:")]
    return SEP.join(["run-recipe", names[0] if names and names[0] else stem(recipe) or "inline recipe"])


def file_task_name(parameters: dict[str, Any]) -> str:
    """`convert <file name>` for a task whose `req` holds the raw file."""
    req = parameters.get("req")
    return f"convert {short(getattr(req, 'raw_file', '') or '')}"


def name_file_count(value: int) -> None:
    """Once a batch has expanded its globs, its name gets the file count."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or SEP not in (ctx.flow_run.name or ""):
        return
    name = ctx.flow_run.name
    if not name.startswith("convert-batch") or name.count(SEP) >= 2:
        return
    from prefect.client.orchestration import get_client

    new = f"{name}{SEP}{value} file{'s' if value != 1 else ''}"
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(ctx.flow_run.id, new)
        ctx.flow_run.name = new
    except Exception:  # noqa: BLE001 - a name is never worth failing a conversion
        pass


def record_recipe(recipe: str, storage_options: dict[str, Any] | None) -> None:
    """The recipe's text as a markdown artifact: what ran stays readable after the file changes."""
    from prefect.artifacts import create_markdown_artifact

    from echoflow.recipes.load import read_text

    text, where = read_text(recipe, storage_options)
    fence = "````" if "```" in text else "```"
    create_markdown_artifact(
        key="echoflow-recipe-text",
        markdown=f"# Recipe\n\n{where}\n\n{fence}yaml\n{text}\n{fence}\n",
        description=f"recipe as run: {where}",
    )
