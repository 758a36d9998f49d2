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


def _time_bin(value: Any) -> str:
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


# -- what stages need from each other ------------------------------------------------

Issue = tuple[tuple[Union[str, int], ...], str]
KIND = {
    "open_raw": "echodata",
    "combine_echodata": "echodata",
    "compute_Sv": "Sv",
    "compute_MVBS": "MVBS",
    "compute_NASC": "NASC",
}


class Link(BaseModel):
    """Where stage i reads from: `input` is the index of the stage whose output it takes."""

    input: Optional[int] = None
    kind: str = ""  # what this stage produces: echodata, Sv, MVBS or NASC
    depth: bool = False  # its output has depth / latitude-longitude
    location: bool = False


def wiring(stages: list[Stage]) -> tuple[list[Link], list[Issue]]:
    """Each stage reads the latest output it can take: compute_Sv the echodata (combined or
    per file), compute_MVBS / compute_NASC the Sv (with whatever add_depth / add_location added
    to it), add_depth / add_location the output of the stage right before them (Sv or MVBS)."""
    links: list[Link] = []
    issues: list[Issue] = []
    names = [s.name for s in stages]

    def latest(*kinds: str) -> Optional[int]:
        return next((j for j in range(len(links) - 1, -1, -1) if links[j].kind in kinds), None)

    for i, st in enumerate(stages):
        name, p = st.name, st.params

        def bad(msg: str, key: Optional[str] = None, i: int = i, name: str = name) -> None:
            issues.append((("stages", i, name, key) if key else ("stages", i), msg))

        if name in names[:i]:
            bad(f"stage {name} appears twice; each stage runs once")
        if name == "open_raw":
            if i != 0:
                bad("open_raw must be the first stage")
            links.append(Link(kind="echodata"))
            continue
        if i == 0:
            bad(f"{name} cannot come first; a recipe starts with open_raw")
        if name == "combine_echodata":
            if names[:i] != ["open_raw"]:
                bad("combine_echodata needs open_raw right before it")
            links.append(Link(input=0, kind="echodata"))
        elif name == "compute_Sv":
            src = latest("echodata")
            if src is None:
                bad("compute_Sv needs open_raw before it")
            links.append(Link(input=src, kind="Sv"))
        elif name in ("compute_MVBS", "compute_NASC"):
            src = latest("Sv")
            link = links[src] if src is not None else Link()
            if src is None:
                bad(f"{name} needs compute_Sv before it")
            elif name == "compute_MVBS" and p.range_var == "depth" and not link.depth:
                bad("range_var 'depth' needs add_depth between compute_Sv and compute_MVBS", "range_var")
            elif name == "compute_NASC" and not (link.depth and link.location):
                bad("compute_NASC needs add_depth and add_location between compute_Sv and it")
            links.append(Link(input=src, kind=KIND[name], depth=link.depth, location=link.location))
        else:  # add_depth, add_location
            prev = links[i - 1] if i else Link()
            if prev.kind not in ("Sv", "MVBS"):
                bad(f"{name} needs compute_Sv before it (it adds to the Sv or MVBS right before it)")
            links.append(
                Link(
                    input=i - 1 if i else None,
                    kind=prev.kind,
                    depth=prev.depth or name == "add_depth",
                    location=prev.location or name == "add_location",
                )
            )
    return links, issues


def check_stages(recipe: Recipe) -> list[Issue]:
    """Order and cross-field rules; each issue is (key path, message)."""
    from echoflow.params import sonar_models

    _, issues = wiring(recipe.stages)
    sv = recipe.stage("compute_Sv")
    idx = recipe.stage_names.index("compute_Sv") if sv else -1
    if sv is not None and recipe.sonar_model in ("EK80", "ES80", "EA640"):
        for key in ("waveform_mode", "encode_mode"):
            if getattr(sv, key) is None:
                issues.append(
                    (
                        ("stages", idx, "compute_Sv", key),
                        f"{recipe.sonar_model} data needs compute_Sv.{key} "
                        f"({'CW, BB or FM' if key == 'waveform_mode' else 'complex or power'})",
                    )
                )
    if sv is not None and recipe.sonar_model == "AZFP":
        missing = [k for k in ("salinity", "pressure") if k not in (sv.env_params or {})]
        if missing:
            issues.append(
                (
                    ("stages", idx, "compute_Sv"),
                    f"AZFP calibration needs env_params {' and '.join(missing)} (the file holds only temperature)",
                )
            )
    if sonar_models().get(recipe.sonar_model) and not recipe.xml_path:
        issues.append(
            (("sonar_model",), f"sonar model {recipe.sonar_model} needs its instrument XML file: add xml_path")
        )
    try:
        missing_values = [f for f in recipe.source.placeholders() if f not in recipe.source.values]
        if missing_values:
            issues.append(
                (
                    ("source", "path"),
                    f"template uses {{{missing_values[0]}}} but source.values has no {missing_values[0]!r}",
                )
            )
    except ValueError as exc:
        issues.append((("source", "path"), str(exc)))
    issues += cross_file_issues(recipe)
    s = recipe.source
    if s.start and s.end and s.end <= s.start:
        issues.append((("source", "end"), f"end {s.end} is not after start {s.start}"))
    return issues


def cross_file_issues(recipe: Recipe) -> list[Issue]:
    """`keep` names stages of the recipe; groups and per-file merging need what they merge."""
    import pandas as pd

    names = recipe.stage_names
    issues: list[Issue] = []
    for i, name in enumerate(recipe.keep):
        if name not in names:
            issues.append((("keep", i), f"{name!r} is not a stage of this recipe; expected one of: {', '.join(names)}"))
    if "combine_echodata" not in names:
        if recipe.groups is not None:
            issues.append((("groups",), "groups need combine_echodata: only cross-file stages run per group"))
        return issues
    p = recipe.stage("compute_MVBS")
    if p is not None and pd.Timedelta("1D") % pd.Timedelta(p.ping_time_bin) != pd.Timedelta(0):
        issues.append(
            (
                ("stages", names.index("compute_MVBS"), "compute_MVBS", "ping_time_bin"),
                f"{p.ping_time_bin!r} does not divide a day; per-file MVBS are merged on bins "
                "counted from midnight, so use e.g. '20s', '5min' or '1h'",
            )
        )
    return issues
