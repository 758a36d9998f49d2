"""Parameter models shared by the flows, the CLI and deployments (one list of defaults)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from echoflow.errors import ParameterError

OutputType = Literal["netcdf", "zarr"]
OUTPUT_TYPES: tuple[str, ...] = ("netcdf", "zarr")
EXTENSIONS = {"netcdf": ".nc", "zarr": ".zarr"}


@lru_cache
def sonar_models() -> dict[str, bool]:
    """Every sonar model echopype can convert, mapped to whether it needs an XML file."""
    from echoflow._echopype import load

    SONAR_MODELS = load().core.SONAR_MODELS
    return {name: bool(spec.get("xml")) for name, spec in SONAR_MODELS.items()}


def check_output_type(value: str) -> str:
    if value not in OUTPUT_TYPES:
        raise ParameterError(
            f"unknown output_type {value!r}: allowed values are {', '.join(map(repr, OUTPUT_TYPES))}"
        )
    return value


def check_sonar_model(model: str, xml_path: Optional[str]) -> str:
    known = sonar_models()
    name = model.strip().upper()
    if name not in known:
        raise ParameterError(
            f"unknown sonar model {model!r}: echopype supports {', '.join(sorted(known))}"
        )
    if known[name] and not xml_path:
        raise ParameterError(
            f"sonar model {name} needs its instrument XML file: pass xml_path (CLI: --xml PATH)"
        )
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvertRequest(_Strict):
    """One raw file to one converted output."""

    raw_file: str = Field(min_length=1)
    sonar_model: str
    xml_path: Optional[str] = None
    convert_params: Optional[dict[str, Any]] = None
    input_storage_options: dict[str, Any] = Field(default_factory=dict)
    output_path: str = Field(min_length=1)
    output_type: str = "netcdf"
    overwrite: bool = False
    output_storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("output_type")
    @classmethod
    def _output_type(cls, v: str) -> str:
        return check_output_type(v)

    @model_validator(mode="after")
    def _model(self) -> "ConvertRequest":
        object.__setattr__(self, "sonar_model", check_sonar_model(self.sonar_model, self.xml_path))
        return self


class BatchRequest(_Strict):
    """Many raw files (list, globs or manifests) to one output prefix."""

    sources: list[str] = Field(min_length=1)
    sonar_model: str
    output_prefix: str = Field(min_length=1)
    output_type: str = "netcdf"
    xml_path: Optional[str] = None
    convert_params: Optional[dict[str, Any]] = None
    concurrency: int = Field(default=0, ge=0, le=256)
    overwrite: bool = False
    input_storage_options: dict[str, Any] = Field(default_factory=dict)
    output_storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("output_type")
    @classmethod
    def _output_type(cls, v: str) -> str:
        return check_output_type(v)

    @model_validator(mode="after")
    def _model(self) -> "BatchRequest":
        object.__setattr__(self, "sonar_model", check_sonar_model(self.sonar_model, self.xml_path))
        return self

    def file_request(self, raw_file: str, output_path: str) -> ConvertRequest:
        return ConvertRequest(
            raw_file=raw_file,
            sonar_model=self.sonar_model,
            xml_path=self.xml_path,
            convert_params=self.convert_params,
            input_storage_options=self.input_storage_options,
            output_path=output_path,
            output_type=self.output_type,
            overwrite=self.overwrite,
            output_storage_options=self.output_storage_options,
        )
