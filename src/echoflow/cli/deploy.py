"""`echoflow deploy` (register the flows on a work pool) and `echoflow graph`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from echoflow.cli.common import fail, out
from echoflow.errors import one_line


def graph(
    flow_name: str = typer.Argument("convert-raw-sonar", help="convert-raw-sonar or convert-batch"),
    output: Path = typer.Option(Path("echoflow-graph.png"), "--out", "-o", help=".png, .svg, .pdf or .mmd"),
) -> None:
    """Write a flow's task graph to an image file (without running it)."""
    from echoflow.home import use_embedded_default

    use_embedded_default()
    from echoflow.graph import write_graph

    write_graph(flow_name, output)
    out.print(f"wrote {output}")


def deploy(
    pool: str = typer.Option(..., "--pool", envvar="ECHOFLOW_WORK_POOL", help="Kubernetes work pool name"),
    image: str = typer.Option(..., "--image", envvar="ECHOFLOW_IMAGE", help="Image the flow-run Jobs run"),
    create_pool: bool = typer.Option(False, "--create-pool", help="Create the pool when it is absent"),
    base_job_template: Optional[Path] = typer.Option(
        None, "--base-job-template", help="JSON base job template (creates or updates the pool's)"
    ),
    deployment_name: str = typer.Option("echoflow", "--deployment-name", help="Name of each deployment"),
    concurrency_limit: Optional[int] = typer.Option(
        None,
        "--concurrency-limit",
        min=0,
        help="Most conversion Jobs at once (queue 'conversions'; cruise parents not counted)",
    ),
    flow: List[str] = typer.Option([], "--flow", help="Only these flows (default: all)"),
) -> None:
    """Register echoflow's flows as deployments on a work pool (any Prefect API; idempotent)."""
    from echoflow.home import use_embedded_default

    where = use_embedded_default()
    from echoflow.deploy import deploy as register

    try:
        changes = register(
            pool,
            image,
            create_pool=create_pool,
            base_job_template=base_job_template,
            deployment_name=deployment_name,
            concurrency_limit=concurrency_limit,
            flows=flow or None,
        )
    except Exception as exc:  # noqa: BLE001 - an unreachable API, a refused request: one line, with where
        fail(f"could not register deployments at {where}: {one_line(exc)}")
    table = Table(title=f"Prefect API: {where}", title_justify="left")
    for col in ("kind", "name", "action"):
        table.add_column(col)
    for c in changes:
        table.add_row(c.kind, c.name, c.action)
    out.print(table)
    out.print(
        f"run one: prefect deployment run 'convert-batch/{deployment_name}' "
        "-p sources='[\"s3://bucket/raw/*.raw\"]' -p sonar_model=EK60 -p output_prefix=s3://bucket/out"
    )
