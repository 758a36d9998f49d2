"""What stages need from each other: which stage feeds which, and what a recipe's stage
list gets wrong (checked before any work, reported with the stage's position)."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel

from echoflow.recipes.model import Recipe, Stage

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
    import pandas as pd  # here: the CLI validates recipes without paying pandas' import

    if p is not None and pd.Timedelta("1D") % pd.Timedelta(p.ping_time_bin) != pd.Timedelta(0):
        issues.append(
            (
                ("stages", names.index("compute_MVBS"), "compute_MVBS", "ping_time_bin"),
                f"{p.ping_time_bin!r} does not divide a day; per-file MVBS are merged on bins "
                "counted from midnight, so use e.g. '20s', '5min' or '1h'",
            )
        )
    return issues
