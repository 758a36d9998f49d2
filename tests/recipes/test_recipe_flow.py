"""Recipes run as real Prefect flows (session Prefect server) on the real sample files.

Every output is compared with echopype on the same raw files: per-file outputs exactly
with echopype's function, group outputs (joined and merged from per-file outputs) closely
with echopype's function on the combined data (sums in another order differ in the last bits)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from prefect_api import artifacts
from recipe_samples import adjacent_copies, group_recipe
from samples import AZFP_RAW, AZFP_XML, EK60_RAW

from echoflow.recipes.flow import run_recipe
from echoflow.storage import read_marker, stem

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _api(prefect_server):
    yield prefect_server


def strip(da: xr.DataArray) -> xr.DataArray:
    """Without attributes that record when something ran."""
    da = da.copy()
    da.attrs = {k: v for k, v in da.attrs.items() if "time" not in k and k != "history"}
    return da


def assert_same(got: xr.Dataset, ref: xr.Dataset, exact: bool, skip: tuple[str, ...] = ()) -> None:
    got = got.drop_vars(["sample_count", "ping_count"], errors="ignore")  # echoflow's merge weights
    assert set(got.data_vars) == set(ref.data_vars)
    assert dict(got.sizes) == dict(ref.sizes)
    for v in ref.data_vars:
        if v in skip:
            continue
        a, b = strip(got[v]).load(), strip(ref[v]).load()
        if exact:
            xr.testing.assert_identical(a, b)
        else:
            xr.testing.assert_allclose(a, b)


def run(recipe: str, **kw: Any):
    state = run_recipe(recipe=recipe, return_state=True, **kw)
    return state, state.result(raise_on_failure=False)


def statuses(result: dict) -> dict[tuple[str, str], str]:
    return {(r["stage"], r["item"]): r["status"] for r in result["results"]}


def ep():
    from echoflow._echopype import load

    return load()


PER_FILE = """\
name: dy1801
source: {{url: {folder}}}
sonar_model: EK60
concurrency: 2
quicklook: {{enabled: false}}
output: {{prefix: {out}}}
keep: [compute_Sv]
stages:
  - open_raw
  - compute_Sv
  - compute_MVBS: {{range_bin: {range_bin}, ping_time_bin: 20s}}
"""


def test_per_file_chains_match_echopype_then_skip(ek60_batch: list[Path], tmp_path: Path) -> None:
    """Each file's chain runs in a worker process with its data in memory; only the kept Sv
    and the final MVBS are written, and they are exactly echopype's on that file."""
    out = tmp_path / "out"
    recipe = PER_FILE.format(folder=ek60_batch[0].parent, out=out, range_bin="20m")
    state, result = run(recipe)
    assert state.is_completed(), state.message
    items = [p.stem for p in ek60_batch]
    assert statuses(result) == {
        **{("compute_Sv", i): "computed" for i in items},
        **{("compute_MVBS", i): "computed" for i in items},
    }
    assert sorted(p.name for p in out.iterdir()) == ["compute_MVBS", "compute_Sv"]  # open_raw stayed in memory

    e = ep()
    raw = ek60_batch[1]
    sv = e.calibrate.compute_Sv(e.open_raw(str(raw), sonar_model="EK60"))
    mvbs = e.commongrid.compute_MVBS(sv, range_bin="20m", ping_time_bin="20s")
    ours_sv = xr.open_zarr(out / "compute_Sv" / f"{raw.stem}.zarr")
    ours_mvbs = xr.open_zarr(out / "compute_MVBS" / f"{raw.stem}.zarr")
    assert_same(ours_sv, sv, exact=True, skip=("source_filenames",))
    assert_same(ours_mvbs, mvbs, exact=True)
    # the weights that merge per-file MVBS: samples behind each cell, pings in each bin
    assert int(ours_mvbs["ping_count"].sum()) == sv.sizes["ping_time"]
    assert int(ours_mvbs["sample_count"].sum()) == int(sv["Sv"].notnull().sum())

    marker = read_marker(str(out / "compute_MVBS" / f"{raw.stem}.zarr"), None)
    assert marker["fingerprint"] and marker["first_ping"].startswith("2018-02-11T17:00:25")

    # Second run: every output is complete, nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.echoflow.json")}
    state, result = run(recipe)
    assert state.is_completed(), state.message
    assert set(statuses(result).values()) == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A changed parameter recomputes its stage and the ones after it, not those before.
    state, result = run(PER_FILE.format(folder=ek60_batch[0].parent, out=out, range_bin="50m"))
    assert state.is_completed(), state.message
    got = statuses(result)
    assert {got[("compute_Sv", i)] for i in items} == {"skipped"}
    assert {got[("compute_MVBS", i)] for i in items} == {"computed"}
    assert xr.open_zarr(out / "compute_MVBS" / f"{raw.stem}.zarr").sizes["echo_range"] < mvbs.sizes["echo_range"]


def test_cruise_mvbs_equals_echopype_on_combined_sv(tmp_path: Path) -> None:
    """Per-file MVBS merged across files equal compute_MVBS of the combined Sv, bins that
    straddle a file boundary included; the combined EchoData equals combine_echodata."""
    raws = adjacent_copies(tmp_path / "raw", [0, 72, 144])
    out = tmp_path / "out"
    recipe = f"""
name: dy1801
source: {{url: {raws[0].parent}}}
sonar_model: EK60
concurrency: 2
output: {{prefix: {out}}}
keep: [combine_echodata]
stages:
  - open_raw
  - combine_echodata
  - compute_Sv
  - compute_MVBS: {{range_bin: 20m, ping_time_bin: 20s}}
"""
    state, result = run(recipe)
    assert state.is_completed(), state.message
    got = statuses(result)
    assert got[("combine_echodata", "dy1801")] == got[("compute_MVBS", "dy1801")] == "computed"
    assert {got[("compute_MVBS", p.stem)] for p in raws} == {"computed"}

    e = ep()
    eds = [e.open_raw(str(p), sonar_model="EK60") for p in raws]
    combined = e.combine_echodata(eds)
    ref = e.commongrid.compute_MVBS(e.calibrate.compute_Sv(combined), range_bin="20m", ping_time_bin="20s")
    ours = xr.open_zarr(out / "compute_MVBS" / "dy1801.zarr")
    parts = [xr.open_zarr(out / "compute_MVBS" / f"{p.stem}.zarr") for p in raws]
    shared = set(parts[0].ping_time.values) & set(parts[1].ping_time.values)
    assert len(shared) == 1  # a bin that straddles the boundary
    assert_same(ours, ref, exact=False)
    t = shared.pop()
    assert int(ours["ping_count"].sel(ping_time=t)) == sum(int(p["ping_count"].sel(ping_time=t)) for p in parts[:2])

    ours_ed = e.open_converted(str(out / "combine_echodata" / "dy1801.zarr"))
    for group in ("Sonar/Beam_group1", "Environment", "Platform", "Platform/NMEA"):
        assert_same(ours_ed[group], combined[group], exact=True)

    # Quick-looks of the group's MVBS only (one PNG per channel), linked from the run.
    pngs = sorted((out / "quicklook").rglob("*.png"))
    assert len(pngs) == 5 and all(p.read_bytes()[:8] == PNG for p in pngs)
    assert all("dy1801" in p.name for p in pngs)

    state, result = run(recipe)
    assert set(statuses(result).values()) == {"skipped"}


def test_groups_by_gap_and_by_schedule(ek60_batch: list[Path], tmp_path: Path) -> None:
    """Files 0, 20 and 60 minutes apart: a 30 min gap rule and a transect schedule group them;
    each group's MVBS equals echopype's on its own files. The second recipe reuses the
    per-file outputs of the first (same stages, same fingerprints)."""
    out = tmp_path / "out"
    schedule = tmp_path / "transects.csv"
    schedule.write_text(
        "name,start,end\nT1,2018-02-11T16:30:00,2018-02-11T16:50:00\nT2,2018-02-11T16:50:00,2018-02-11T18:00:00\n"
    )
    recipe = group_recipe(ek60_batch[0].parent, out)
    state, result = run(recipe + "groups: {gap: 30min}\n")
    assert state.is_completed(), state.message
    first, second = "dy-D20180211-T164025", "dy-D20180211-T174025"
    assert statuses(result)[("compute_MVBS", first)] == statuses(result)[("compute_MVBS", second)] == "computed"

    e = ep()
    sv = e.calibrate.compute_Sv(e.combine_echodata([e.open_raw(str(p), sonar_model="EK60") for p in ek60_batch[:2]]))
    ref = e.commongrid.compute_MVBS(sv, range_bin="20m", ping_time_bin="20s")
    ours = xr.open_zarr(out / "compute_MVBS" / f"{first}.zarr")
    assert ours.sizes["ping_time"] > 60  # the 20 empty minutes between the files are bins too
    assert_same(ours, ref, exact=False)

    state, result = run(recipe + f"groups: {{schedule: {schedule}}}\n")
    assert state.is_completed(), state.message
    got = statuses(result)
    assert got[("compute_MVBS", "T1")] == got[("compute_MVBS", "T2")] == "computed"
    assert {got[("compute_MVBS", p.stem)] for p in ek60_batch} == {"skipped"}
    assert xr.open_zarr(out / "compute_MVBS" / "T1.zarr").sizes["ping_time"] == 4  # one file: 70 s
    t2 = xr.open_zarr(out / "compute_MVBS" / "T2.zarr")
    assert str(t2.ping_time.values[0]).startswith("2018-02-11T17:00:20")


def test_bad_recipe_fails_the_run_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    state, result = run(
        f"source: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {out}}}\n"
        "stages:\n  - open_raw\n  - add_depth\n"
    )
    assert state.is_failed()
    assert "<recipe>:6: stages[1]: add_depth needs compute_Sv before it" in str(result)
    assert not out.exists()


def test_failed_file_is_isolated(ek60_batch: list[Path], tmp_path: Path) -> None:
    """Per-file chains, two at a time, and a group output: a truncated file fails its own
    chain only; the group output is not made (it would miss that file), and nothing of the
    bad file looks complete."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for p in ek60_batch[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "DY1801_EK60-D20180211-T190000.raw"
    bad.write_bytes(EK60_RAW.read_bytes()[: EK60_RAW.stat().st_size // 2])
    out = tmp_path / "out"
    recipe = group_recipe(folder, out, extra="keep: [compute_Sv]", mvbs="range_bin: 50m, ping_time_bin: 30s")
    state, result = run(recipe)
    assert state.is_failed()
    got = statuses(result)
    assert got[("compute_Sv", bad.stem)] == "failed" and got[("compute_MVBS", bad.stem)] == "failed"
    errors = {(r["stage"], r["item"]): r["error"] for r in result["results"]}
    assert "truncated" in errors[("compute_MVBS", bad.stem)]
    assert got[("compute_MVBS", "dy")] == "failed" and "not run: 1 file(s) failed" in errors[("compute_MVBS", "dy")]
    for p in ek60_batch[:2]:
        assert got[("compute_MVBS", p.stem)] == got[("compute_Sv", p.stem)] == "computed"
    assert not list(out.rglob(f"{bad.stem}*")) and not list(out.rglob("dy.zarr*"))
    assert "truncated" in state.message


def test_files_share_task_runs_and_each_file_is_reported(tmp_path: Path) -> None:
    """A task run covers a batch of files (each task run costs this process and the API CPU
    the workers need); each file still has its result row and its log line, and a bad file
    fails its own batch's task run, not the others' nor the other files of its batch."""
    from prefect_api import flow_run_logs, task_runs
    from util import ek60_copies

    folder = tmp_path / "raw"
    good = ek60_copies(folder, 4)
    bad = folder / "DY1801_EK60-D20180211-T235900.raw"
    bad.write_bytes(EK60_RAW.read_bytes()[: EK60_RAW.stat().st_size // 2])
    out = tmp_path / "out"
    state, result = run(PER_FILE.format(folder=folder, out=out, range_bin="20m"))
    assert state.is_failed()
    got = statuses(result)
    assert got[("compute_MVBS", bad.stem)] == got[("compute_Sv", bad.stem)] == "failed"
    for p in good:
        assert got[("compute_MVBS", p.stem)] == got[("compute_Sv", p.stem)] == "computed"
        assert read_marker(str(out / "compute_MVBS" / f"{p.stem}.zarr"), None)
    assert not list(out.rglob(f"{bad.stem}*"))

    run_id = state.state_details.flow_run_id
    tasks = task_runs(run_id, expect=3)
    # 5 files on 2 processes: batches of ceil(5 / 4) = 2 files
    assert len(tasks) == 3, [t.name for t in tasks]
    by_state = {t.name: t.state.type.value for t in tasks}
    assert sorted(by_state.values()) == ["COMPLETED", "COMPLETED", "FAILED"], by_state
    failed_task = next(n for n, s in by_state.items() if s == "FAILED")
    assert failed_task == f"chain {bad.stem}", by_state  # the last file alone in its batch
    first = next(n for n in by_state if good[0].stem in n)
    assert first == f"chains {good[0].stem} … {good[1].stem} (2 files)"
    logs = flow_run_logs(run_id)
    for p in good:
        assert any(m.startswith(f"{p.stem}: compute_Sv computed") for m in logs), logs
    assert any(m.startswith(f"{bad.stem}: ") and "truncated" in m for m in logs), logs


@pytest.mark.slow  # the AZFP chain; the EK60 chains stay fast
def test_azfp_sv_and_mvbs_with_xml(tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = f"""
name: azfp
source: {{url: {AZFP_RAW.parent}}}
sonar_model: AZFP
xml_path: {AZFP_XML}
concurrency: 1
quicklook: {{max_artifacts: 2}}
output: {{prefix: {out}}}
keep: [open_raw, compute_Sv]
stages:
  - open_raw
  - compute_Sv:
      env_params: {{salinity: 29.6, pressure: 60}}
  - compute_MVBS: {{range_bin: 10m, ping_time_bin: 30s}}
"""
    state, result = run(recipe)
    assert state.is_completed(), state.message
    item = stem(str(AZFP_RAW))  # keeps AZFP's numbered suffix
    assert statuses(result) == {
        ("open_raw", item): "converted",
        ("compute_Sv", item): "computed",
        ("compute_MVBS", item): "computed",
    }
    e = ep()
    ed = e.open_raw(str(AZFP_RAW), sonar_model="AZFP", xml_path=str(AZFP_XML))
    sv = e.calibrate.compute_Sv(ed, env_params={"salinity": 29.6, "pressure": 60})
    mvbs = e.commongrid.compute_MVBS(sv, range_bin="10m", ping_time_bin="30s")
    ours_sv = xr.open_zarr(out / "compute_Sv" / f"{item}.zarr")
    ours_mvbs = xr.open_zarr(out / "compute_MVBS" / f"{item}.zarr")
    ours_ed = e.open_converted(str(out / "open_raw" / f"{item}.zarr"))
    # the Sv was computed from the file in memory, so it names the raw file, not the zarr
    assert_same(
        ours_sv,
        e.calibrate.compute_Sv(ours_ed, env_params={"salinity": 29.6, "pressure": 60}),
        exact=True,
        skip=("source_filenames",),
    )
    assert ours_sv["source_filenames"].values[0] == str(AZFP_RAW)
    assert_same(ours_sv, sv, exact=False, skip=("source_filenames",))
    assert_same(ours_mvbs, mvbs, exact=False)
    assert len(list((out / "quicklook").rglob("*.png"))) == 2 * 4  # 4 AZFP channels
    found = artifacts(state.state_details.flow_run_id)
    assert not [a for a in found if a.type == "image"]  # PNGs stay files; the database holds links
    [index] = [a for a in found if a.key.startswith("echoflow-quicklooks")]
    assert all(str(p) in index.data for p in (out / "quicklook").rglob("*.png"))
    assert "base64" not in index.data and len(index.data) < 10_000
    [text] = [a for a in found if a.key == "echoflow-recipe-text"]
    assert "compute_MVBS: {range_bin: 10m" in text.data


@pytest.mark.slow  # the recipe chain again, on S3
def test_s3_source_and_output(
    public_bucket: str, private_bucket: str, s3_options: dict, s3_anon_options: dict, monkeypatch
) -> None:
    """NCEI-style anonymous archive in, credentialed bucket out; the credentials come by
    environment and never reach Prefect's stored parameters."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    prefix = f"s3://{private_bucket}/recipes-{uuid.uuid4().hex[:8]}"
    secrets = {k: v for k, v in s3_options.items() if k in ("key", "secret")}
    monkeypatch.setenv("ECHOFLOW_OUTPUT_STORAGE_OPTIONS", json.dumps(secrets))
    endpoint = {"client_kwargs": s3_options["client_kwargs"]}
    recipe = f"""
name: ncei
source:
  url: s3://{public_bucket}/data/raw
  path: "{{ship}}/{{cruise}}/{{instrument}}"
  values: {{ship: Discovery, cruise: DY1801, instrument: EK60}}
  start: 2018-02-11
  end: 2018-02-12
  storage_options: {json.dumps(s3_anon_options)}
sonar_model: EK60
concurrency: 1
quicklook: {{max_artifacts: 1}}
output:
  prefix: {prefix}
  storage_options: {json.dumps(endpoint)}
keep: [open_raw, compute_Sv]
stages: [open_raw, compute_Sv, {{compute_MVBS: {{range_bin: 20m, ping_time_bin: 20s}}}}]
"""
    state, result = run(recipe)
    assert state.is_completed(), state.message
    item = EK60_RAW.stem
    assert set(statuses(result)) == {("open_raw", item), ("compute_Sv", item), ("compute_MVBS", item)}
    for stage in ("open_raw", "compute_Sv", "compute_MVBS"):
        assert read_marker(f"{prefix}/{stage}/{item}.zarr", s3_options)
    e = ep()
    sv = e.calibrate.compute_Sv(e.open_raw(str(EK60_RAW), sonar_model="EK60"))
    mvbs = e.commongrid.compute_MVBS(sv, range_bin="20m", ping_time_bin="20s")
    ours_sv = xr.open_zarr(f"{prefix}/compute_Sv/{item}.zarr", storage_options=s3_options)
    ours_mvbs = xr.open_zarr(f"{prefix}/compute_MVBS/{item}.zarr", storage_options=s3_options)
    assert_same(ours_sv, sv, exact=False, skip=("source_filenames",))
    assert_same(ours_mvbs, mvbs, exact=False)
    assert np.isfinite(ours_mvbs["Sv"].values).any()
    pngs = fs.glob(f"{prefix}/quicklook/*/*.png")
    assert len(pngs) == 10 and all(fs.cat_file(p)[:8] == PNG for p in pngs)
    assert not [p for p in fs.find(prefix) if "partial" in p]
    assert secrets["secret"] not in json.dumps(flow_run_record(state), default=str)

    state, result = run(recipe)
    assert set(statuses(result).values()) == {"skipped"}


def flow_run_record(state) -> dict:
    """What Prefect stored about the run and its task runs (parameters, inputs, artifacts)."""
    from prefect.client.orchestration import get_client
    from prefect_api import task_runs

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    return {
        "run": run.model_dump(mode="json"),
        "tasks": [t.model_dump(mode="json") for t in task_runs(run_id)],
        "artifacts": [a.model_dump(mode="json") for a in artifacts(run_id)],
    }
