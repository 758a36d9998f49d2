"""Groups of files for the cross-file stages: transect schedules and pauses in the data.

No Prefect and no echopype: grouping works on the files' data times only."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from echoflow.errors import InputNotFound, ParameterError
from echoflow.recipes import load_recipe
from echoflow.recipes.groups import Span, make_groups, read_schedule

T0 = datetime(2018, 2, 11, 16, 0)


def recipe(tmp_path: Path, groups: str):
    return load_recipe(
        f"name: dy\nsource: {{url: {tmp_path}}}\nsonar_model: EK60\n"
        f"output: {{prefix: {tmp_path / 'out'}}}\n"
        f"stages: [open_raw, combine_echodata, compute_Sv]\ngroups: {groups}\n"
    )


def spans(*minutes: tuple[int, int]) -> list[Span]:
    """Files starting and ending at these minutes after T0."""
    return [
        Span(item=f"f{i}", first=T0 + timedelta(minutes=a), last=T0 + timedelta(minutes=b))
        for i, (a, b) in enumerate(minutes)
    ]


def test_gap_starts_a_new_group_after_a_long_pause(tmp_path: Path) -> None:
    r = recipe(tmp_path, "{gap: 30min}")
    # pauses: 5 min, 40 min, 30 min (not longer than the gap)
    groups, outside = make_groups(r, spans((0, 10), (15, 25), (65, 70), (100, 110)))
    assert [(g.name, g.items) for g in groups] == [
        ("dy-D20180211-T160000", ["f0", "f1"]),
        ("dy-D20180211-T170500", ["f2", "f3"]),
    ]
    assert outside == []


def test_schedule_puts_each_file_in_the_transect_of_its_first_ping(tmp_path: Path) -> None:
    csv = tmp_path / "transects.csv"
    csv.write_text(
        "name,start,end\n# leg 1\nT1,2018-02-11T16:00:00,2018-02-11T16:30:00\n"
        "T2,2018-02-11T16:30:00Z,2018-02-11T18:00:00Z\nT3,2018-02-12T00:00,2018-02-12T01:00\n"
    )
    r = recipe(tmp_path, f"{{schedule: {csv.name}}}")  # relative to the working directory
    assert r.groups.schedule == str(Path(csv.name).resolve())
    r = recipe(tmp_path, f"{{schedule: {csv}}}")
    groups, outside = make_groups(r, spans((0, 10), (25, 35), (40, 50), (200, 210)))
    assert [(g.name, g.items) for g in groups] == [("T1", ["f0", "f1"]), ("T2", ["f2"])]  # T3: no file
    assert outside == ["f3"]


def test_no_groups_is_one_group_named_after_the_recipe(tmp_path: Path) -> None:
    r = load_recipe(
        f"name: dy\nsource: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {tmp_path}}}\n"
        "stages: [open_raw, combine_echodata, compute_Sv]\n"
    )
    groups, _ = make_groups(r, spans((30, 40), (0, 10)))
    assert [(g.name, g.items) for g in groups] == [("dy", ["f1", "f0"])]  # in time order


@pytest.mark.parametrize(
    "text, message",
    [
        ("T1,2018-02-11T16:00,2018-02-11T17:00\nT2,soon,2018-02-11T18:00\n", ":2: 'soon' is not a date-time"),
        ("name,start,end\nT1,2018-02-11T16:00\n", ":2: expected 3 columns name,start,end, got 2"),
        ("T1,2018-02-11T17:00,2018-02-11T16:00\n", ":1: transect 'T1' ends before it starts"),
        ("name,start,end\n", ": the transect schedule lists no transect"),
    ],
)
def test_bad_schedule_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(text)
    with pytest.raises(ParameterError) as info:
        read_schedule(str(csv))
    assert str(info.value) == f"{csv}{message}" or str(info.value).startswith(f"{csv}{message}")


def test_missing_schedule_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputNotFound, match=rf"^{re.escape(str(missing))}: not found"):
        read_schedule(str(missing))
