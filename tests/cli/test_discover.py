"""`echoflow discover`: files overlapping the window, and a manifest `convert` reads."""

from datetime import datetime
from pathlib import Path

import pytest
from util import ek60_copies

from echoflow import discover


def touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x" * 10)


def test_the_file_recording_when_the_window_opens_is_kept(tmp_path):
    touch(
        tmp_path,
        ["A-D20180211-T150000.raw", "A-D20180211-T160000.raw", "A-D20180211-T170000.raw", "A-D20180211-T180000.raw"],
    )
    got = discover.list_raw(str(tmp_path), "*.raw", None, datetime(2018, 2, 11, 16, 30), datetime(2018, 2, 11, 17, 30))
    # 16:00 runs until 17:00, so it holds 16:30-17:00; 15:00 ends at 16:00; 18:00 starts after the end
    assert [f.name for f in got.selected] == ["A-D20180211-T160000.raw", "A-D20180211-T170000.raw"]
    assert got.outside == 2
    edge = discover.list_raw(str(tmp_path), "*.raw", None, datetime(2018, 2, 11, 16), datetime(2018, 2, 11, 17))
    assert [f.name for f in edge.selected] == ["A-D20180211-T160000.raw"]  # ends are exclusive
    last = discover.list_raw(str(tmp_path), "*.raw", None, datetime(2018, 2, 11, 19), None)
    assert [f.name for f in last.selected] == ["A-D20180211-T180000.raw"]  # may still be recording


@pytest.mark.slow  # manifests themselves: tests/unit/storage/test_sources_outputs.py
def test_manifest_feeds_convert(run_cli, tmp_path):
    raws = ek60_copies(tmp_path / "archive", 3)  # 16:00:25, 16:10:25, 16:20:25
    manifest = tmp_path / "lists" / "window.txt"
    proc = run_cli(
        "discover",
        str(tmp_path / "archive"),
        "--start",
        "2018-02-11T16:15",
        "--end",
        "2018-02-11T16:20",
        "--manifest",
        str(manifest),
    )
    assert proc.returncode == 0, proc.stderr
    listed = [ln for ln in manifest.read_text().splitlines() if not ln.startswith("#")]
    assert listed == [str(raws[1])], (listed, [r.name for r in raws])  # 16:10:25 runs into the window
    conv = run_cli("convert", f"@{manifest}", "-m", "EK60", "-o", str(tmp_path / "out"), "--json")
    assert conv.returncode == 0, conv.stderr
    assert '"converted"' in conv.stdout and raws[1].stem in conv.stdout and raws[2].stem not in conv.stdout
