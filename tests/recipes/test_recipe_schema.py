"""Recipe validation (key path + line + what is expected), stage wiring, the date window.

No Prefect and no echopype processing here: these checks run before any work."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from echoflow import discover
from echoflow.errors import InputNotFound, ParameterError
from echoflow.recipes import RecipeError, load_recipe
from echoflow.recipes.plan import make_plan
from echoflow.recipes.wiring import wiring

GOOD = """\
name: dy1801
source:
  url: {folder}
  start: 2018-02-11T16:30:00
  end: 2018-02-11T17:30:00
sonar_model: EK60
output:
  prefix: {out}
stages:
  - open_raw
  - combine_echodata
  - compute_Sv:
      env_params: {{sound_speed: 1480}}
  - compute_MVBS:
      range_bin: 20m
      ping_time_bin: 20s
  - add_depth
"""


@pytest.fixture
def good(tmp_path: Path) -> str:
    return GOOD.format(folder=tmp_path / "raw", out=tmp_path / "out")


def error_of(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(text)
    return info.value


def test_good_recipe_loads(good: str) -> None:
    r = load_recipe(good)
    assert r.stage_names == ["open_raw", "combine_echodata", "compute_Sv", "compute_MVBS", "add_depth"]
    assert r.sonar_model == "EK60" and r.name == "dy1801"
    assert r.source.start == datetime(2018, 2, 11, 16, 30)
    assert r.stage("compute_Sv").env_params == {"sound_speed": 1480.0}
    assert r.stage("compute_MVBS").range_bin == "20m"
    assert Path(r.output.prefix).is_absolute()


# (what to change in GOOD, the line, the key path, words the message must hold)
BAD = [
    ("unknown key", ("  start:", "  strat:"), 4, "source.strat", ["unknown key 'strat'", "start", "end"]),
    (
        "unknown top-level key",
        ("sonar_model: EK60", "sonar_model: EK60\nsonar: EK60"),
        7,
        "sonar",
        ["unknown key 'sonar'", "sonar_model"],
    ),
    (
        "bad range bin",
        ("range_bin: 20m", "range_bin: twenty"),
        15,
        "stages[3].compute_MVBS.range_bin",
        ["'twenty'", "'20m'"],
    ),
    ("range bin without unit", ("range_bin: 20m", "range_bin: 20"), 15, "stages[3].compute_MVBS.range_bin", ["metres"]),
    (
        "bad time bin",
        ("ping_time_bin: 20s", "ping_time_bin: 20 parsecs"),
        16,
        "stages[3].compute_MVBS.ping_time_bin",
        ["'20 parsecs'", "'20s'"],
    ),
    (
        "bad type",
        ("sound_speed: 1480", "sound_speed: fast"),
        13,
        "stages[2].compute_Sv.env_params.sound_speed",
        ["number", "'fast'"],
    ),
    (
        "bad literal",
        ("range_bin: 20m", "range_bin: 20m\n      range_var: height"),
        16,
        "stages[3].compute_MVBS.range_var",
        ["'echo_range'", "'depth'", "'height'"],
    ),
    ("unknown stage", ("  - add_depth", "  - add_depht"), 17, "stages[4]", ["unknown stage 'add_depht'", "add_depth"]),
    (
        "unknown stage parameter",
        ("  - add_depth", "  - add_depth: {{depth_ofset: 3}}"),
        17,
        "stages[4].add_depth.depth_ofset",
        ["unknown key 'depth_ofset'", "depth_offset"],
    ),
    (
        "MVBS before Sv",
        ("  - compute_Sv:\n      env_params: {{sound_speed: 1480}}\n", ""),
        12,
        "stages[2]",
        ["compute_MVBS needs compute_Sv"],
    ),
    (
        "add_depth without Sv",
        ("  - combine_echodata\n", "  - add_depth\n  - combine_echodata\n"),
        11,
        "stages[1]",
        ["add_depth needs compute_Sv"],
    ),
    ("combine without open_raw", ("  - open_raw\n", ""), 10, "stages[0]", ["cannot come first", "open_raw"]),
    ("stage twice", ("  - add_depth", "  - add_depth\n  - add_depth"), 18, "stages[5]", ["appears twice"]),
    (
        "MVBS on depth needs add_depth first",
        ("range_bin: 20m", "range_bin: 20m\n      range_var: depth"),
        16,
        "stages[3].compute_MVBS.range_var",
        ["add_depth"],
    ),
    (
        "missing key",
        ("output:\n  prefix: {out}\n", "output: {{}}\n"),
        7,
        "output.prefix",
        ["missing required key 'prefix'"],
    ),
    ("unknown sonar model", ("sonar_model: EK60", "sonar_model: EK61"), 6, "sonar_model", ["'EK61'", "EK80"]),
    (
        "window ends before it starts",
        ("end: 2018-02-11T17:30:00", "end: 2018-02-10"),
        5,
        "source.end",
        ["not after start"],
    ),
    ("negative concurrency", ("name: dy1801", "name: dy1801\nconcurrency: -2"), 2, "concurrency", ["-2"]),
    ("duplicate key", ("name: dy1801", "name: dy1801\nname: other"), 2, "name", ["duplicate key"]),
    ("broken YAML", ("  start: 2018", "  start: [2018"), 5, "", ["not valid YAML"]),
]


@pytest.mark.parametrize("change,line,key,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_recipe_names_key_line_and_expectation(tmp_path: Path, change, line, key, words) -> None:
    old, new = (c.format(folder=tmp_path / "raw", out=tmp_path / "out") for c in change)
    text = GOOD.format(folder=tmp_path / "raw", out=tmp_path / "out")
    assert old in text
    err = error_of(text.replace(old, new, 1))
    assert isinstance(err, ParameterError)
    message = str(err)
    assert "\n" not in message
    assert f"<recipe>:{line}:" in message, message
    if key:
        assert f": {key}: " in message, message
    for w in words:
        assert w in message, message
    assert not (tmp_path / "out").exists()


def test_error_names_the_recipe_file(tmp_path: Path, good: str) -> None:
    path = tmp_path / "cruise.yaml"
    path.write_text(good.replace("range_bin: 20m", "range_bin: 20 m s"))
    message = str(error_of(str(path)))
    assert message.startswith(f"{path}:15: stages[3].compute_MVBS.range_bin: ")


def test_several_errors_are_all_reported_on_one_line(tmp_path: Path, good: str) -> None:
    err = error_of(good.replace("  start:", "  strat:").replace("range_bin: 20m", "range_bin: x"))
    assert [(line, key) for line, key, _ in err.issues] == [
        (4, "source.strat"),
        (15, "stages[3].compute_MVBS.range_bin"),
    ]
    assert "\n" not in str(err)


def test_missing_recipe_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputNotFound, match=rf"^{re.escape(str(missing))}: not found"):
        load_recipe(str(missing))


@pytest.mark.parametrize(
    "model,stage,words",
    [
        ("AZFP", "compute_Sv", ["salinity", "pressure"]),
        ("EK80", "compute_Sv", ["waveform_mode"]),
    ],
)
def test_instrument_specific_needs(tmp_path: Path, model: str, stage: str, words: list[str]) -> None:
    text = GOOD.format(folder=tmp_path, out=tmp_path / "out").replace("EK60", model)
    message = str(error_of(text))
    assert f"<recipe>:12: stages[2].{stage}" in message
    for w in words:
        assert w in message


def test_path_template_needs_its_values(tmp_path: Path) -> None:
    text = GOOD.format(folder="s3://bucket/data/raw", out=tmp_path / "out").replace(
        "  start:", "  path: '{ship}/{cruise}/{instrument}'\n  values: {ship: Discovery, cruise: DY1801}\n  start:"
    )
    message = str(error_of(text))
    assert "<recipe>:4: source.path: template uses {instrument}" in message


def test_stage_wiring() -> None:
    """Each stage reads the latest output it can take: MVBS and NASC the Sv with depth and
    location added, add_* the output right before them."""
    head = "source: {url: /x}\nsonar_model: EK60\noutput: {prefix: /y}\n"
    r = load_recipe(
        head + "stages: [open_raw, combine_echodata, compute_Sv, add_depth, add_location,\n"
        "         {compute_MVBS: {range_var: depth}}, compute_NASC]\n"
    )
    links, issues = wiring(r.stages)
    assert not issues
    assert [link.input for link in links] == [None, 0, 1, 2, 3, 4, 4]
    assert links[4].depth and links[4].location and links[5].kind == "MVBS" and links[6].kind == "NASC"

    r = load_recipe(head + "stages: [open_raw, compute_Sv, compute_MVBS, add_depth]\n")
    assert [link.input for link in wiring(r.stages)[0]] == [None, 0, 1, 2]  # depth added to MVBS

    with pytest.raises(RecipeError, match=r"<recipe>:4: stages\[3\]: compute_NASC needs add_depth and add_location"):
        load_recipe(head + "stages: [open_raw, compute_Sv, add_depth, compute_NASC]\n")


# -- the date window ----------------------------------------------------------------


def touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x" * 10)


def test_file_time_from_names() -> None:
    assert discover.file_time("DY1801_EK60-D20180211-T164025.raw") == datetime(2018, 2, 11, 16, 40, 25)
    assert discover.file_time("s3://b/x/HB1906-D20191016-T000131.raw") == datetime(2019, 10, 16, 0, 1, 31)
    assert discover.file_time("17031001.01A") == datetime(2017, 3, 10, 1)
    assert discover.file_time("DY1801_EK60.raw") is None
    assert discover.file_time("X-D20181341-T250000.raw") is None  # digits, but no date


def test_window_selects_by_name_and_reports_undated(tmp_path: Path) -> None:
    touch(
        tmp_path,
        [
            "A-D20180211-T155959.raw",
            "A-D20180211-T163000.raw",
            "A-D20180211-T170000.raw",
            "A-D20180211-T173000.raw",
            "notes.raw",
            "A-D20180211-T171000.idx",
        ],
    )
    got = discover.list_raw(str(tmp_path), "*.raw", None, datetime(2018, 2, 11, 16, 30), datetime(2018, 2, 11, 17, 30))
    assert [f.name for f in got.selected] == ["A-D20180211-T163000.raw", "A-D20180211-T170000.raw"]
    assert [f.name for f in got.undated] == ["notes.raw"]  # reported, not silently dropped
    assert got.outside == 2 and got.total_bytes == 20
    assert "1 without a time in the name" in got.headline()
    everything = discover.list_raw(str(tmp_path), "*.raw")
    assert len(everything.selected) == 5 and not everything.undated


def test_plan_applies_the_window_and_names_outputs(tmp_path: Path, good: str) -> None:
    touch(tmp_path / "raw", [f"DY1801_EK60-D20180211-T{t}.raw" for t in ("160000", "164025", "170025", "180000")])
    plan = make_plan(load_recipe(good))
    # 16:00:00 runs until 16:40:25, into the window [16:30, 17:30): kept
    assert [f.name for f in plan.listing.selected] == [
        "DY1801_EK60-D20180211-T160000.raw",
        "DY1801_EK60-D20180211-T164025.raw",
        "DY1801_EK60-D20180211-T170025.raw",
    ]
    out = tmp_path / "out"
    stems = ["DY1801_EK60-D20180211-T160000", "DY1801_EK60-D20180211-T164025", "DY1801_EK60-D20180211-T170025"]
    # one chain per file; combine_echodata is the cross-file step, not a per-file stage
    assert [s.stage for s in plan.chains[0].steps] == ["open_raw", "compute_Sv", "compute_MVBS", "add_depth"]
    # only the last stage is written per file (and per group: plan.cross); the rest stays in memory
    assert plan.outputs("add_depth") == [f"{out}/add_depth/{s}.zarr" for s in stems]
    assert plan.outputs("open_raw") == plan.outputs("compute_Sv") == []
    assert plan.cross == ["add_depth"]
    add_depth = plan.chains[0].steps[-1]
    assert plan.chains[0].steps[add_depth.input].stage == "compute_MVBS"
    assert not out.exists()  # planning writes nothing


def test_keep_writes_intermediates(tmp_path: Path, good: str) -> None:
    touch(tmp_path / "raw", ["DY1801_EK60-D20180211-T164025.raw"])
    plan = make_plan(load_recipe(good + "keep: [compute_Sv, combine_echodata]\n"))
    out = tmp_path / "out"
    stem = "DY1801_EK60-D20180211-T164025"
    assert plan.outputs("compute_Sv") == [f"{out}/compute_Sv/{stem}.zarr"]
    assert plan.outputs("open_raw") == [f"{out}/open_raw/{stem}.zarr"]  # what combine_echodata reads
    assert plan.cross == ["combine_echodata", "add_depth"]


def test_changed_parameter_changes_fingerprints_downstream_only(tmp_path: Path, good: str) -> None:
    touch(tmp_path / "raw", ["DY1801_EK60-D20180211-T164025.raw"])
    a = make_plan(load_recipe(good)).chains[0].steps
    b = make_plan(load_recipe(good.replace("range_bin: 20m", "range_bin: 10m"))).chains[0].steps
    assert [x.stage for x, y in zip(a, b) if x.fingerprint != y.fingerprint] == ["compute_MVBS", "add_depth"]


CROSS = [
    (
        "keep names a stage not in the recipe",
        "keep: [compute_NASC]\n",
        18,
        "keep[0]",
        ["'compute_NASC' is not a stage of this recipe"],
    ),
    ("gap is no duration", "groups: {gap: often}\n", 18, "groups.gap", ["'often' is not a time bin"]),
    ("groups need one rule", "groups: {}\n", 18, "groups", ["either schedule", "or gap"]),
    ("MVBS bins must tile a day", None, 16, "stages[3].compute_MVBS.ping_time_bin", ["'7min'", "midnight"]),
]


@pytest.mark.parametrize("case, extra, line, key, words", CROSS, ids=[c[0] for c in CROSS])
def test_cross_file_settings_are_checked(good: str, case: str, extra, line: int, key: str, words) -> None:
    text = good + extra if extra else good.replace("ping_time_bin: 20s", "ping_time_bin: 7min")
    err = error_of(text)
    assert err.issues[0][:2] == (line, key), err
    assert all(w in err.issues[0][2] for w in words), err


def test_groups_need_combine(tmp_path: Path) -> None:
    err = error_of(
        f"source: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {tmp_path}}}\n"
        "stages: [open_raw, compute_Sv]\ngroups: {gap: 30min}\n"
    )
    assert err.issues[0][:2] == (5, "groups") and "need combine_echodata" in err.issues[0][2]


def test_empty_window_is_an_error(tmp_path: Path, good: str) -> None:
    touch(tmp_path / "raw", ["DY1801_EK60-D20180212-T000000.raw"])
    with pytest.raises(InputNotFound, match=r"nothing to process .*1 outside the window"):
        make_plan(load_recipe(good))
