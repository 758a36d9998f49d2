"""Processing recipes: a YAML pipeline (open_raw → combine → Sv → MVBS / NASC, depth,
location) validated up front and run as a Prefect flow, locally or on Kubernetes."""

from echoflow.recipes.load import RecipeError, load_recipe
from echoflow.recipes.model import STAGES, Recipe

__all__ = ["STAGES", "Recipe", "RecipeError", "load_recipe"]
