"""`echoflow run` and `echoflow discover` (added to the main CLI by `register`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, List, Optional

import typer
from rich.table import Table

from echoflow.cli.common import err, out
from echoflow.cli.common import fail as _fail
from echoflow.cli.common import parse_options as _options
from echoflow.errors import one_line


def _when(text: Optional[str], what: str) -> Optional[datetime]:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{what} {text!r} is not a date or time; expected e.g. 2018-02-11 or 2018-02-11T16:00:00")
    return None


def print_listing(listing: Any) -> None:
    table = Table(title=f"{listing.folder} ({listing.pattern})", title_justify="left")
    for col in ("file", "start (UTC)", "MB"):
        table.add_column(col, no_wrap=True)
    for f in listing.selected:
        table.add_row(f.name, str(f.time or ""), f"{f.bytes / 1e6:.2f}")
    from echoflow.display import print_wide

    print_wide(out, table)
    for f in listing.undated:
        out.print(
            f"[yellow]left out[/] (no time in its name, cannot be placed in the window): {f.url}", highlight=False
        )
    out.print(f"would process {listing.headline()}", highlight=False, soft_wrap=True)


def print_plan(plan: Any) -> None:
    from echoflow.recipes.plan import is_complete

    print_listing(plan.listing)
    prefix = plan.recipe.output.prefix.rstrip("/") + "/"
    table = Table(title=f"recipe {plan.recipe.name}: outputs under {prefix}", title_justify="left")
    for col in ("stage", "outputs", "complete", "to do", "first"):
        table.add_column(col, overflow="fold")
    for sp in plan.stages:
        done = sum(is_complete(j) for j in sp.jobs)
        table.add_row(
            sp.name,
            str(len(sp.jobs)),
            str(done),
            str(len(sp.jobs) - done),
            sp.jobs[0].output.removeprefix(prefix) if sp.jobs else "",
        )
    out.print(table)
    out.print(plan.describe(), highlight=False, soft_wrap=True)


def print_results(data: dict[str, Any], prefix: str) -> None:
    from echoflow import display

    display.print_wide(out, display.results_table(data, prefix))
    display.print_errors(
        out, [f"{r['stage']} {r['item']}: {r['error']}" for r in data.get("results", []) if r.get("error")]
    )
    display.print_run_url(out)


def _quiet() -> None:
    """Keep the terminal to echoflow's own report: echopype's progress lines and library
    deprecation notices still reach the run logs with --verbose."""
    import logging
    import warnings

    # echopype itself runs in the worker processes (which quiet its loggers); this one never imports it
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("echopype"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _answer_if_complete(plan: Any, json_out: bool, quiet: bool) -> int:
    """Every output complete: report so from the listings, without starting Prefect or a run.
    Otherwise the number of files with work to do."""
    from echoflow import display
    from echoflow.recipes.status import report, standing

    done, files = standing(plan)
    if done is None:
        return files
    result = report(plan, done)
    prefix = plan.recipe.output.prefix.rstrip("/") + "/"
    if json_out:
        display.print_json(
            {
                "ok": True,
                "headline": result["headline"],
                "output_prefix": prefix,
                "prefect_api": None,
                "results": result["results"],
            }
        )
    elif not quiet:
        print_results(result, prefix)
        err.print("[dim]every output is complete; nothing to run (--overwrite recomputes)[/]", highlight=False)
    raise typer.Exit(0)


def run(
    recipe: str = typer.Argument(..., help="Recipe YAML file (path or URL)"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would be processed; write nothing"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute complete outputs"),
    option: List[str] = typer.Option([], "--option", help="fsspec option to read the recipe URL, KEY=VALUE"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's run logs and library warnings"),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON document (every output's stage, item, "
        "status, output, seconds, error) instead of the table",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or table: failures and exit code only"),
) -> None:
    """Run a processing recipe (open_raw → combine → Sv → MVBS …) on the embedded Prefect API."""
    from echoflow.recipes.load import load_recipe
    from echoflow.recipes.plan import make_plan

    opts = _options(option, "--option")
    rec = load_recipe(recipe, opts)  # checked in full before anything starts
    if dry_run:
        print_plan(make_plan(rec))
        raise typer.Exit(0)
    plan = make_plan(rec)
    files = _answer_if_complete(plan, json_out, quiet) if not overwrite else len(plan.chains)
    from echoflow import display, runtime
    from echoflow.workers import Workers, available_cpus, yield_to_workers

    # before the workers start: they inherit this process's stderr
    library = display.LibraryOutput(not verbose, (err,)).__enter__()
    # echopype takes seconds to import: the worker processes load it while this process
    # starts Prefect (as `convert` does), and this process never imports it.
    pool = Workers(max(1, min(rec.concurrency or available_cpus(), files)))
    pool.__enter__()
    yield_to_workers()  # the conversions come first on a busy machine

    from echoflow.home import foreground_run, use_embedded_default

    where = use_embedded_default(quiet=not verbose)
    if not (quiet or json_out):
        err.print(f"[dim]runs recorded in: {where}[/]", highlight=False, soft_wrap=True)
    if not verbose:
        _quiet()
        display.libraries_to_run_log(load_echopype=False)
    from echoflow.recipes.flow import run_recipe

    with (
        display.Ticker(err, f"running recipe {rec.name}", enabled=not (quiet or json_out)),
        foreground_run(),
        runtime.entered(workers=pool),
    ):
        state = run_recipe(recipe=recipe, storage_options=opts, overwrite=overwrite, return_state=True)
        display.note_run(state)
    pool.release()  # the processes exit while this one reports
    library.__exit__(None, None, None)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        _fail(one_line(result))
    prefix = rec.output.prefix.rstrip("/") + "/"
    if json_out:
        display.print_json(
            {
                "ok": state.is_completed(),
                "headline": result.get("headline", ""),
                "output_prefix": prefix,
                "prefect_api": where,
                "run_url": display.run_url(),
                "results": result.get("results", []),
            }
        )
    elif quiet:
        display.print_errors(
            err, [f"{r['stage']} {r['item']}: {r['error']}" for r in result.get("results", []) if r.get("error")]
        )
    else:
        print_results(result, prefix)
    raise typer.Exit(0 if state.is_completed() else 1)


def discover(
    root: str = typer.Argument(..., help="Archive root, e.g. s3://ncei-wcsd-archive/data/raw, or a folder"),
    ship: Optional[str] = typer.Option(None, "--ship", help="Ship folder, e.g. Henry_B._Bigelow"),
    cruise: Optional[str] = typer.Option(None, "--cruise", help="Cruise folder, e.g. HB1906"),
    instrument: Optional[str] = typer.Option(None, "--instrument", help="Instrument folder, e.g. EK60"),
    start: Optional[str] = typer.Option(None, "--start", help="Window start (UTC), e.g. 2019-10-16T00:00"),
    end: Optional[str] = typer.Option(None, "--end", help="Window end (UTC, excluded)"),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="File name glob (default by --sonar-model)"),
    sonar_model: Optional[str] = typer.Option(None, "--sonar-model", "-m", help="Sets the default pattern"),
    anon: bool = typer.Option(False, "--anon", help="Anonymous access (public buckets)"),
    option: List[str] = typer.Option([], "--option", help="fsspec storage option, KEY=VALUE (JSON values)"),
    manifest: Optional[str] = typer.Option(
        None, "--manifest", help="Also write the files, one a line, to this file: `echoflow convert @FILE` reads it"
    ),
) -> None:
    """List the raw files of a ship / cruise / instrument that overlap the window."""
    from echoflow import discover as disc

    parts = [ship, cruise, instrument]
    if any(parts) and not all(parts):
        _fail("give --ship, --cruise and --instrument together (or none, to list ROOT itself)")
    folder = disc.archive_folder(root, ship, cruise, instrument) if ship and cruise and instrument else root
    opts = _options(option, "--option")
    if anon:
        opts["anon"] = True
    listing = disc.list_raw(
        folder, pattern or disc.default_pattern(sonar_model), opts, _when(start, "--start"), _when(end, "--end")
    )
    print_listing(listing)
    if manifest:
        try:
            n = disc.write_manifest(listing, manifest)
        except OSError as exc:
            _fail(f"{manifest}: cannot write the manifest ({exc.strerror or exc})")
        err.print(
            f"wrote {n} file{'s' if n != 1 else ''} to {manifest}; convert them with: "
            f"echoflow convert @{manifest} -m MODEL -o OUT",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command(name="run")(run)
    app.command(name="discover")(discover)
