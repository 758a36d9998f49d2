"""What every command shares: the consoles, exit codes, one-line failures, option parsing."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any, List

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)


class ExitCode(IntEnum):
    """What the CLI exits with (a signal's stop exits 128 + its number: 130, 143)."""

    OK = 0
    FAILED = 1  # a file failed (the others complete), or an unexpected error
    USAGE = 2  # bad parameters or input, before any work


def fail(message: str, code: int = ExitCode.USAGE) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_options(pairs: List[str], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE parsed as JSON when it is JSON (true, 3, {...})."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{what} {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def io_options(input_option: List[str], output_option: List[str], anon: bool) -> dict[str, Any]:
    """The input/output storage options of a conversion command (credentials by environment)."""
    inputs = storage_options(input_option, "--input-option", "input")
    if anon:
        inputs["anon"] = True
    return {
        "input_storage_options": inputs,
        "output_storage_options": storage_options(output_option, "--output-option", "output"),
    }


def storage_options(pairs: List[str], what: str, direction: str) -> dict[str, Any]:
    """Options become run parameters; credentials among them go by environment instead."""
    import os

    from echoflow.params import env_options, split_secrets

    settings, secrets = split_secrets(parse_options(pairs, what))
    if secrets:
        name = f"ECHOFLOW_{direction.upper()}_STORAGE_OPTIONS"
        os.environ[name] = json.dumps({**env_options(direction), **secrets})
    return settings


def pydantic_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in errors()]
        return "; ".join(parts)
    return str(exc)
