"""Processing recipes: a YAML pipeline (open_raw → combine → Sv → MVBS / NASC, depth,
location) validated up front and run as a Prefect flow, locally or on Kubernetes."""

from __future__ import annotations

from typing import Any

__all__ = ["STAGES", "Recipe", "RecipeError", "load_recipe"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI (which every worker process re-imports) registers the recipe commands
    # without loading the recipe models and fsspec.
    if name in ("RecipeError", "load_recipe"):
        from echoflow.recipes import load

        return getattr(load, name)
    if name in ("STAGES", "Recipe"):
        from echoflow.recipes import model

        return getattr(model, name)
    raise AttributeError(f"module 'echoflow.recipes' has no attribute {name!r}")
