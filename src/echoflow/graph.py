"""Task graphs of the flows, traced without running them (as `flow.visualize()` does),
drawn with matplotlib so no Graphviz binary is needed; `.mmd` writes Mermaid text."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from echoflow.errors import ParameterError

FORMATS = (".png", ".svg", ".pdf", ".mmd")


def _examples(tmp: Path) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    from echoflow.flows.batch import convert_batch
    from echoflow.flows.convert import convert_raw_sonar

    raws = []
    for i in range(3):
        p = tmp / f"example-D20180211-T16{i}000.raw"
        p.write_bytes(b"")
        raws.append(str(p))
    out = str(tmp / "out")
    return {
        "convert-raw-sonar": (convert_raw_sonar, dict(raw_file=raws[0], sonar_model="EK60", output_path=out)),
        "convert-batch": (convert_batch, dict(sources=raws, sonar_model="EK60", output_prefix=out, concurrency=1)),
    }


def trace(flow_name: str) -> list[Any]:
    """The flow's tasks (name, upstream tasks) as its body would call them."""
    from prefect.utilities.visualization import TaskVizTracker

    with tempfile.TemporaryDirectory() as tmp:
        examples = _examples(Path(tmp))
        if flow_name not in examples:
            raise ParameterError(f"unknown flow {flow_name!r}: choose one of {', '.join(examples)}")
        flow, params = examples[flow_name]
        with TaskVizTracker() as tracker:
            try:
                flow.fn(**params)  # type: ignore[attr-defined]  # a Prefect Flow
            except Exception:  # noqa: BLE001 - code after the tasks may need real results
                pass
    if not tracker.tasks:
        raise ParameterError(f"no tasks traced for {flow_name}")
    return tracker.tasks


def _layers(tasks: list[Any]) -> dict[Any, int]:
    depth: dict[Any, int] = {}
    for t in tasks:  # tracing order is a topological order
        depth[t] = 1 + max((depth.get(u, 0) for u in t.upstream_tasks), default=-1)
    return depth


def write_graph(flow_name: str, output: Path) -> None:
    if output.suffix not in FORMATS:
        raise ParameterError(f"{output}: unsupported format; use one of {', '.join(FORMATS)}")
    tasks = trace(flow_name)
    if output.suffix == ".mmd":
        from prefect.utilities.visualization import TaskVizTracker, build_mermaid_dependencies

        tracker = TaskVizTracker()
        tracker.tasks = tasks
        output.write_text(build_mermaid_dependencies(tracker))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = _layers(tasks)
    rows: dict[int, list[Any]] = {}
    for t in tasks:
        rows.setdefault(depth[t], []).append(t)
    width = max(len(r) for r in rows.values())
    pos = {t: ((i + 0.5) * width / len(r), -d) for d, r in rows.items() for i, t in enumerate(r)}
    fig, ax = plt.subplots(figsize=(max(4, 2.6 * width), 1.2 + 1.1 * len(rows)))
    for t in tasks:
        for u in t.upstream_tasks:
            ax.annotate(
                "", xy=pos[t], xytext=pos[u], arrowprops=dict(arrowstyle="-|>", color="0.4", shrinkA=14, shrinkB=14)
            )
    for t, (x, y) in pos.items():
        ax.text(
            x,
            y,
            t.name,
            ha="center",
            va="center",
            fontsize=9,
            bbox=dict(boxstyle="round,pad=0.5", fc="#dceefb", ec="#1f6fb2"),
        )
    ax.set_title(f"{flow_name}: task graph", fontsize=11)
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
