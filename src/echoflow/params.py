"""Parameter models shared by the flows, the CLI and deployments (one list of defaults)."""

from __future__ import annotations

import json
import os
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from echoflow.errors import ParameterError

OutputType = Literal["netcdf", "zarr"]
OUTPUT_TYPES: tuple[str, ...] = ("netcdf", "zarr")
EXTENSIONS = {"netcdf": ".nc", "zarr": ".zarr"}


# Every sonar model echopype 0.11 converts, and whether it needs an instrument XML file.
# A static table, so that checking a parameter never imports echopype (seconds) or asks a
# worker process; tests/unit/test_params.py checks it against the installed echopype.
SONAR_MODELS: dict[str, bool] = {
    "AZFP": True,
    "AZFP6": False,
    "EK60": False,
    "ES70": False,
    "EK80": False,
    "ES80": False,
    "EA640": False,
    "AD2CP": False,
}


def sonar_models() -> dict[str, bool]:
    """Every sonar model echoflow accepts, mapped to whether it needs an XML file."""
    return SONAR_MODELS


def check_output_type(value: str) -> str:
    if value not in OUTPUT_TYPES:
        raise ParameterError(f"unknown output_type {value!r}: allowed values are {', '.join(map(repr, OUTPUT_TYPES))}")
    return value


def check_sonar_model(model: str, xml_path: Optional[str]) -> str:
    known = sonar_models()
    name = model.strip().upper()
    if name not in known:
        raise ParameterError(f"unknown sonar model {model!r}: echopype supports {', '.join(sorted(known))}")
    if known[name] and not xml_path:
        raise ParameterError(f"sonar model {name} needs its instrument XML file: pass xml_path (CLI: --xml PATH)")
    return name


SECRET_KEYS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "session_token",
        "client_secret",
        "account_key",
        "sas_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


def split_secrets(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, credentials): credentials travel by environment, never as run parameters."""
    secret = {k: v for k, v in options.items() if k.lower() in SECRET_KEYS}
    return {k: v for k, v in options.items() if k not in secret}, secret


def env_options(direction: str) -> dict[str, Any]:
    """Storage options from ECHOFLOW_INPUT_/OUTPUT_STORAGE_OPTIONS (JSON), e.g. from a Secret.

    Prefect records run parameters in its database; credentials passed this way never are.
    """
    name = f"ECHOFLOW_{direction.upper()}_STORAGE_OPTIONS"
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{name} is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise ParameterError(f"{name} must be a JSON object")
    return value


def _with_env_options(data: Any) -> Any:
    if isinstance(data, dict):
        for direction in ("input", "output"):
            field = f"{direction}_storage_options"
            data = {**data, field: {**env_options(direction), **(data.get(field) or {})}}
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Conversion(_Strict):
    """What every conversion request shares: model, format, options (credentials from env)."""

    _env = model_validator(mode="before")(_with_env_options)

    sonar_model: str
    xml_path: Optional[str] = None
    convert_params: Optional[dict[str, Any]] = None
    output_type: str = "netcdf"
    overwrite: bool = False
    input_storage_options: dict[str, Any] = Field(default_factory=dict)
    output_storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("output_type")
    @classmethod
    def _output_type(cls, v: str) -> str:
        return check_output_type(v)

    @model_validator(mode="after")
    def _model(self) -> "_Conversion":
        object.__setattr__(self, "sonar_model", check_sonar_model(self.sonar_model, self.xml_path))
        return self


class ConvertRequest(_Conversion):
    """One raw file to one converted output."""

    raw_file: str = Field(min_length=1)
    output_path: str = Field(min_length=1)


class BatchRequest(_Conversion):
    """Many raw files (list, globs or manifests) to one output prefix."""

    sources: list[str] = Field(min_length=1)
    output_prefix: str = Field(min_length=1)
    concurrency: int = Field(default=0, ge=0, le=256)

    def file_request(self, raw_file: str, output_path: str) -> ConvertRequest:
        shared = self.model_dump(exclude={"sources", "output_prefix", "concurrency"})
        return ConvertRequest(raw_file=raw_file, output_path=output_path, **shared)
