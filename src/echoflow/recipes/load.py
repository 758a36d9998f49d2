"""Read a recipe (a file, an URL or YAML text) and validate it, with line numbers in errors."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Optional

import fsspec
from pydantic import BaseModel, ValidationError

from echoflow import storage
from echoflow.errors import ParameterError
from echoflow.params import env_options
from echoflow.recipes import yamllines
from echoflow.recipes.model import Recipe
from echoflow.recipes.wiring import check_stages

Loc = tuple[str | int, ...]


class RecipeError(ParameterError):
    """A recipe is invalid; raised before any data is read or written.

    `issues` holds (line, key path, message) for each problem; the message is one line.
    """

    def __init__(self, where: str, issues: list[tuple[Optional[int], str, str]]) -> None:
        self.where = where
        self.issues = issues
        parts = [f"{where}:{line or '?'}: {key + ': ' if key else ''}{msg}" for line, key, msg in issues]
        super().__init__("; ".join(parts))


def key_path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_text(ref: str, storage_options: dict[str, Any] | None = None) -> tuple[str, str]:
    """(YAML text, name for messages) of a recipe given inline or as a path / URL."""
    if "\n" in ref or ref.lstrip().startswith("{"):
        return ref, "<recipe>"
    try:
        with fsspec.open(ref, "rt", **(storage_options or {})) as f:
            return f.read(), storage.shown(ref)
    except Exception as exc:
        raise storage.io_error(exc, ref, "reading the recipe") from exc


def _walk_data(data: Any, loc: Loc, missing: bool) -> Loc:
    """The part of `loc` that exists in the YAML (pydantic adds union tags such as 'float')."""
    here: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(data, str) and i == len(loc) - 1 and loc[:1] == ("stages",):
            break  # `- compute_MVBS` written as a bare name: its parameters are not in the file
        else:
            if missing and i == len(loc) - 1:
                here.append(part)
            break
        here.append(part)
    return tuple(here)


def _model_at(loc: Loc) -> Optional[type[BaseModel]]:
    """The pydantic model that validates the mapping at `loc` (to list its allowed keys)."""
    tp: Any = Recipe
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int) or typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            tp = args[-1] if args else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _message(err: Any, loc: Loc) -> str:  # a pydantic ErrorDetails
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f"; expected one of: {', '.join(model.model_fields)}" if model else ""
        return f"unknown key {loc[-1]!r}{allowed}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    msg = msg.replace("Input should be", "expected").replace("Input", "value")
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        msg += f" (got {value!r})"
    return msg


def _either(msgs: list[str]) -> str:
    """One message for the failed members of a union: 'expected a number or a list (got x)'."""
    if len(msgs) == 1:
        return msgs[0]
    got = msgs[0][msgs[0].rfind(" (got ") :] if " (got " in msgs[0] else ""
    parts = [m.removesuffix(got).split(",")[0] for m in msgs]
    return parts[0] + "".join(" or " + p.removeprefix("expected ") for p in parts[1:]) + got


def validate(data: Any, lines: dict[yamllines.Path, int], where: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(
            where,
            [(yamllines.line_of(lines, ()), "", "expected a mapping with source, sonar_model, output and stages")],
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        found: dict[Loc, list[str]] = {}
        for err in exc.errors():
            loc = tuple(err["loc"])
            shown = _walk_data(data, loc, err["type"] == "missing")
            msg = _message(err, shown if err["type"] in ("extra_forbidden", "missing") else loc)
            found.setdefault(shown, [])
            if msg not in found[shown]:
                found[shown].append(msg)
        issues = [(yamllines.line_of(lines, loc), key_path(loc), _either(msgs)) for loc, msgs in found.items()]
        raise RecipeError(where, sorted(issues, key=lambda t: t[0] or 0)) from None
    problems = check_stages(recipe)
    if problems:
        raise RecipeError(where, [(yamllines.line_of(lines, loc), key_path(loc), msg) for loc, msg in problems])
    return recipe


def absolute(recipe: Recipe) -> Recipe:
    """Relative local paths are relative to the working directory; make them absolute so
    every task (thread, process or pod) reads and writes the same place."""

    def fix(path: Optional[str]) -> Optional[str]:
        return path if not path or "://" in path else str(Path(path).expanduser().resolve())

    groups = recipe.groups
    if groups is not None and groups.schedule:
        groups = groups.model_copy(update={"schedule": fix(groups.schedule)})
    return recipe.model_copy(
        update={
            "xml_path": fix(recipe.xml_path),
            "groups": groups,
            "source": recipe.source.model_copy(update={"url": fix(recipe.source.url)}),
            "output": recipe.output.model_copy(update={"prefix": fix(recipe.output.prefix)}),
        }
    )


def with_env_options(recipe: Recipe) -> Recipe:
    """Credentials come by environment (ECHOFLOW_INPUT_/OUTPUT_STORAGE_OPTIONS, JSON, e.g. from a
    Kubernetes Secret), like the conversion flows: Prefect stores run parameters, and a
    recipe's text may be one. The recipe's own options win over the environment's."""
    src, out = recipe.source, recipe.output
    return recipe.model_copy(
        update={
            "source": src.model_copy(update={"storage_options": {**env_options("input"), **src.storage_options}}),
            "output": out.model_copy(update={"storage_options": {**env_options("output"), **out.storage_options}}),
        }
    )


def load_recipe(ref: str, storage_options: dict[str, Any] | None = None, env: bool = True) -> Recipe:
    """Parse and validate a recipe (YAML text, or a path / URL to it). Raises RecipeError.
    With `env`, storage options from the environment are added (see `with_env_options`)."""
    text, where = read_text(ref, storage_options)
    try:
        data, lines = yamllines.load(text)
    except yamllines.YamlIssue as exc:
        raise RecipeError(where, [(exc.line, key_path(exc.path), exc.message)]) from None
    recipe = absolute(validate(data, lines, where))
    return with_env_options(recipe) if env else recipe
