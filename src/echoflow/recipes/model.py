"""The recipe schema: pydantic models (types, keys, bin strings) and stage-order rules.

Validation is in two passes so every message can carry a key path: pydantic checks each
value, then `check_stages` checks what the stages need from each other (MVBS needs Sv,
NASC needs depth and location, ...). Both only look at the recipe, never at data.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from string import Formatter
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from echoflow.discover import as_utc

STAGES: tuple[str, ...] = (
    "open_raw",
    "combine_echodata",
    "compute_Sv",
    "compute_MVBS",
    "compute_NASC",
    "add_depth",
    "add_location",
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RANGE_BIN = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*m\s*$")
DIST_BIN = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*nmi\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bin(value: Any, pattern: re.Pattern, example: str, unit: str) -> str:
    m = pattern.match(value) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a bin size; expected a positive number of {unit} such as {example!r}")
    return value.strip()


SIMPLE_TIME_BIN = re.compile(r"[1-9][0-9]*(s|min|h|ms|us|ns)")


def _time_bin(value: Any) -> str:
    if isinstance(value, str) and SIMPLE_TIME_BIN.fullmatch(value):
        return value  # '20s', '5min', '1h': pandas takes these; importing it costs the CLI 0.35 s
    import pandas as pd

    # What echopype's compute_MVBS accepts (a pandas duration whose finest unit it names),
    # checked with pandas alone so a recipe is validated without importing echopype.
    try:
        td = pd.Timedelta(value) if isinstance(value, str) else None
        ok = (
            td is not None
            and td > pd.Timedelta(0)
            and td.resolution_string.lower() in ("d", "h", "min", "s", "ms", "us", "ns")
        )
        pd.tseries.frequencies.to_offset(value)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{value!r} is not a time bin; expected a duration such as '20s', '5min' or '1h'")
    return value


# -- stage parameters (names and meanings are echopype's) ----------------------------


class OpenRawParams(_Strict):
    convert_params: Optional[dict[str, Any]] = None


class CombineParams(_Strict):
    channel_selection: Optional[Union[list[str], dict[str, list[str]]]] = None


class SvParams(_Strict):
    env_params: Optional[dict[str, Union[float, list[float]]]] = None
    cal_params: Optional[dict[str, Union[float, list[float], dict[str, float]]]] = None
    waveform_mode: Optional[Literal["CW", "BB", "FM"]] = None
    encode_mode: Optional[Literal["complex", "power"]] = None


class MVBSParams(_Strict):
    range_var: Literal["echo_range", "depth"] = "echo_range"
    range_bin: str = "20m"
    ping_time_bin: str = "20s"
    closed: Literal["left", "right"] = "left"

    # mode="before": `range_bin: 20` (a number in YAML) gets the bin message, not "not a string".
    @field_validator("range_bin", mode="before")
    @classmethod
    def _range(cls, v: Any) -> str:
        return _bin(v, RANGE_BIN, "20m", "metres")

    @field_validator("ping_time_bin", mode="before")
    @classmethod
    def _ping(cls, v: Any) -> str:
        return _time_bin(v)


class NASCParams(_Strict):
    range_bin: str = "10m"
    dist_bin: str = "0.5nmi"
    closed: Literal["left", "right"] = "left"

    @field_validator("range_bin", mode="before")
    @classmethod
    def _range(cls, v: Any) -> str:
        return _bin(v, RANGE_BIN, "10m", "metres")

    @field_validator("dist_bin", mode="before")
    @classmethod
    def _dist(cls, v: Any) -> str:
        return _bin(v, DIST_BIN, "0.5nmi", "nautical miles")


class DepthParams(_Strict):
    depth_offset: Optional[float] = None
    tilt: Optional[float] = None
    downward: bool = True
    use_platform_vertical_offsets: bool = False
    use_platform_angles: bool = False
    use_beam_angles: bool = False


class LocationParams(_Strict):
    nmea_sentence: Optional[str] = None
    datagram_type: Optional[str] = None


class Stage(_Strict):
    """One entry of `stages`: a stage name, or a one-key mapping {name: parameters}."""

    open_raw: Optional[OpenRawParams] = None
    combine_echodata: Optional[CombineParams] = None
    compute_Sv: Optional[SvParams] = None
    compute_MVBS: Optional[MVBSParams] = None
    compute_NASC: Optional[NASCParams] = None
    add_depth: Optional[DepthParams] = None
    add_location: Optional[LocationParams] = None

    @model_validator(mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {value: None}
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(
                "expected a stage name, or one stage name with its parameters (e.g. '- compute_MVBS: {range_bin: 20m}')"
            )
        ((name, params),) = value.items()
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of: {', '.join(STAGES)}")
        return {name: {} if params is None else params}

    @property
    def name(self) -> str:
        return next(n for n in STAGES if getattr(self, n) is not None)

    @property
    def params(self) -> Any:  # the model of this stage's kind
        return getattr(self, self.name)


# -- where the data is and where it goes ---------------------------------------------


def _when(value: Any) -> Any:
    # YAML reads 2018-02-11 as a date; a window bound is a time.
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time())
    return value


class Source(_Strict):
    url: str = Field(min_length=1)
    path: str = ""
    values: dict[str, str] = Field(default_factory=dict)
    pattern: Optional[str] = None
    start: Optional[datetime] = None
    end: Optional[datetime] = None
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        return _when(v)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: Optional[datetime]) -> Optional[datetime]:
        return as_utc(v) if v else v

    @field_validator("values", mode="before")
    @classmethod
    def _str_values(cls, v: Any) -> Any:
        # `cruise: 1801` is a number in YAML; in a path it is text.
        if isinstance(v, dict):
            return {k: str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for k, x in v.items()}
        return v

    def placeholders(self) -> list[str]:
        try:
            return [f for _, f, _, _ in Formatter().parse(self.path) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{self.path!r} is not a path template ({exc})") from None

    def folder(self) -> str:
        sub = self.path.format(**self.values).strip("/") if self.path else ""
        return self.url.rstrip("/") + ("/" + sub if sub else "")


class Output(_Strict):
    prefix: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)


class Quicklook(_Strict):
    enabled: bool = True
    vmin: Optional[float] = None  # colour scale in dB; default -80...-30 for every channel
    vmax: Optional[float] = None
    max_artifacts: int = Field(default=12, ge=0)  # image artifacts per run (each holds its PNG)


class Groups(_Strict):
    """How files form the groups that cross-file stages run on (default: one group)."""

    schedule: Optional[str] = None  # CSV path / URL: name,start,end (UTC) per transect
    gap: Optional[str] = None  # a new group starts after a pause in the data longer than this

    @field_validator("gap", mode="before")
    @classmethod
    def _gap(cls, v: Any) -> Any:
        return None if v is None else _time_bin(v)

    @model_validator(mode="after")
    def _one(self) -> "Groups":
        if (self.schedule is None) == (self.gap is None):
            raise ValueError("give either schedule (a CSV of name,start,end) or gap (e.g. '30min')")
        return self


class Recipe(_Strict):
    name: str = "combined"
    source: Source
    sonar_model: str
    xml_path: Optional[str] = None
    output: Output
    stages: list[Stage] = Field(min_length=1)
    concurrency: int = Field(default=0, ge=0, le=256)
    quicklook: Quicklook = Field(default_factory=Quicklook)
    keep: list[str] = Field(default_factory=list)  # stages whose per-file outputs are written too
    groups: Optional[Groups] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not a usable name; expected letters, digits, '.', '_' or '-'")
        return v

    @field_validator("sonar_model")
    @classmethod
    def _model(cls, v: str) -> str:
        from echoflow.params import sonar_models

        name = v.strip().upper()
        if name not in sonar_models():
            raise ValueError(f"unknown sonar model {v!r}; expected one of: {', '.join(sorted(sonar_models()))}")
        return name

    def stage(self, name: str) -> Any:
        """That stage's parameters (a model per stage kind), or None when absent."""
        return next((s.params for s in self.stages if s.name == name), None)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]
