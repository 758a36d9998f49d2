"""Recipes run as real Prefect flows (session Prefect server) on the real sample files.

Every stage output is compared with echopype: exactly with echopype's function applied
to the previous stage's output, and closely with a direct in-memory echopype chain from
the raw files (dask-backed reductions may differ in the last bits)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from matplotlib import image as mpimg

from echoflow.recipes.flow import run_recipe
from echoflow.storage import read_marker
from prefect_api import artifacts
from samples import AZFP_RAW, AZFP_XML, EK60_RAW

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


EK60_RECIPE = """\
name: dy1801
source:
  url: {folder}
  start: 2018-02-11T16:30:00
  end: 2018-02-11T17:30:00
sonar_model: EK60
concurrency: 1
output:
  prefix: {out}
stages:
  - open_raw
  - combine_echodata
  - compute_Sv
  - compute_MVBS:
      range_bin: {range_bin}
      ping_time_bin: 20s
  - add_depth
"""


def test_ek60_chain_matches_echopype_then_skips(ek60_batch: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = EK60_RECIPE.format(folder=ek60_batch[0].parent, out=out, range_bin="20m")
    state, result = run(recipe)
    assert state.is_completed(), state.message
    selected = ek60_batch[:2]  # the window [16:30, 17:30) holds the first two copies
    assert [f["name"] for f in result["files"]] == [p.name for p in selected]
    assert statuses(result) == {
        **{("open_raw", p.stem): "converted" for p in selected},
        ("combine_echodata", "dy1801"): "computed", ("compute_Sv", "dy1801"): "computed",
        ("compute_MVBS", "dy1801"): "computed", ("add_depth", "dy1801"): "computed"}
    assert sorted(p.name for p in (out / "open_raw").glob("*.zarr")) == [p.stem + ".zarr" for p in selected]

    # Direct echopype chain from the raw files, in memory.
    e = ep()
    combined = e.combine_echodata([e.open_raw(str(p), sonar_model="EK60") for p in selected])
    sv = e.calibrate.compute_Sv(combined)
    mvbs = e.commongrid.compute_MVBS(sv, range_bin="20m", ping_time_bin="20s")
    depth = e.consolidate.add_depth(mvbs.copy(deep=True), combined)  # add_depth changes its input

    path = {s: str(out / s / "dy1801.zarr") for s in
            ("combine_echodata", "compute_Sv", "compute_MVBS", "add_depth")}
    ours_ed = e.open_converted(path["combine_echodata"])
    for group in ("Sonar/Beam_group1", "Environment", "Platform", "Platform/NMEA", "Vendor_specific"):
        assert_same(ours_ed[group], combined[group], exact=True)
    ours = {s: xr.open_zarr(p) for s, p in path.items() if s != "combine_echodata"}
    # exactly echopype's function on the previous stage's output
    assert_same(ours["compute_Sv"], e.calibrate.compute_Sv(ours_ed), exact=True)
    assert_same(ours["compute_MVBS"], e.commongrid.compute_MVBS(ours["compute_Sv"], range_bin="20m",
                                                                ping_time_bin="20s"), exact=True)
    assert_same(ours["add_depth"], e.consolidate.add_depth(xr.open_zarr(path["compute_MVBS"]), ours_ed),
                exact=True)
    # and the same numbers as the in-memory chain (source_filenames names the file read)
    assert_same(ours["compute_Sv"], sv, exact=False, skip=("source_filenames",))
    assert_same(ours["compute_MVBS"], mvbs, exact=False)
    assert_same(ours["add_depth"], depth, exact=False)
    assert "depth" in ours["add_depth"]

    markers = {s: read_marker(p, None) for s, p in path.items()}
    assert all(m and m["fingerprint"] for m in markers.values())
    assert markers["compute_MVBS"]["inputs"] == [path["compute_Sv"]]

    # Quick-looks: one valid PNG per channel for Sv and MVBS, attached to the run.
    channels = [str(c) for c in ours["compute_Sv"]["channel"].values]
    assert len(channels) == 5
    pngs = sorted((out / "quicklook").rglob("*.png"))
    assert len(pngs) == 2 * len(channels)
    for stage in ("compute_Sv", "compute_MVBS"):
        names = sorted(p.name for p in (out / "quicklook" / stage).glob("*.png"))
        assert len(names) == len(channels)
        for p in (out / "quicklook" / stage).glob("*.png"):
            assert p.read_bytes()[:8] == PNG
            img = mpimg.imread(p)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    found = artifacts(state.state_details.flow_run_id)
    images = [a for a in found if a.type == "image"]
    assert len(images) == 2 * len(channels)
    for a in images:
        assert a.data.startswith("data:image/png;base64,")
        assert base64.b64decode(a.data.split(",", 1)[1])[:8] == PNG
        assert a.key.startswith("quicklook-compute-")
    index = next(a for a in found if a.type == "markdown")
    assert all(p.name.split(".", 1)[1] in index.data or str(p) in index.data for p in pngs)
    table = next(a for a in found if a.type == "table" and a.key == "echoflow-recipe-dy1801")
    assert len(json.loads(table.data)) == 6

    # Second run: every stage is complete, nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in [*out.rglob("*.echoflow.json"), *pngs]}
    state, result = run(recipe)
    assert state.is_completed(), state.message
    assert set(statuses(result).values()) == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A changed parameter recomputes its stage and the ones after it, not those before.
    state, result = run(EK60_RECIPE.format(folder=ek60_batch[0].parent, out=out, range_bin="50m"))
    assert state.is_completed(), state.message
    got = statuses(result)
    assert got[("compute_Sv", "dy1801")] == "skipped" and got[("open_raw", selected[0].stem)] == "skipped"
    assert got[("compute_MVBS", "dy1801")] == "computed" and got[("add_depth", "dy1801")] == "computed"
    assert xr.open_zarr(path["compute_MVBS"]).sizes["echo_range"] < mvbs.sizes["echo_range"]


def test_bad_recipe_fails_the_run_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    state, result = run(f"source: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {out}}}\n"
                        "stages:\n  - open_raw\n  - add_depth\n")
    assert state.is_failed()
    assert "<recipe>:6: stages[1]: add_depth needs compute_Sv before it" in str(result)
    assert not out.exists()


def test_failed_file_is_isolated(ek60_batch: list[Path], tmp_path: Path) -> None:
    """Per-file chains (no combine), two at a time: a truncated file fails its own chain
    only; its later stages are not run and leave nothing that looks complete."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for p in ek60_batch[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "DY1801_EK60-D20180211-T190000.raw"
    bad.write_bytes(EK60_RAW.read_bytes()[: EK60_RAW.stat().st_size // 2])
    out = tmp_path / "out"
    recipe = f"""
source: {{url: {folder}}}
sonar_model: EK60
concurrency: 2
quicklook: {{enabled: false}}
output: {{prefix: {out}}}
stages: [open_raw, compute_Sv, {{compute_MVBS: {{range_bin: 50m, ping_time_bin: 30s}}}}]
"""
    state, result = run(recipe)
    assert state.is_failed()
    got = statuses(result)
    assert got[("open_raw", bad.stem)] == "failed"
    assert got[("compute_Sv", bad.stem)] == "failed" and got[("compute_MVBS", bad.stem)] == "failed"
    errors = {(r["stage"], r["item"]): r["error"] for r in result["results"]}
    assert "truncated" in errors[("open_raw", bad.stem)]
    assert "not run" in errors[("compute_MVBS", bad.stem)]
    for p in ek60_batch[:2]:
        assert got[("compute_MVBS", p.stem)] == "computed"
    assert not list(out.rglob(f"{bad.stem}*"))
    assert "truncated" in state.message


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
stages:
  - open_raw
  - compute_Sv:
      env_params: {{salinity: 29.6, pressure: 60}}
  - compute_MVBS: {{range_bin: 10m, ping_time_bin: 30s}}
"""
    state, result = run(recipe)
    assert state.is_completed(), state.message
    item = AZFP_RAW.stem
    assert statuses(result) == {("open_raw", item): "converted", ("compute_Sv", item): "computed",
                                ("compute_MVBS", item): "computed"}
    e = ep()
    ed = e.open_raw(str(AZFP_RAW), sonar_model="AZFP", xml_path=str(AZFP_XML))
    sv = e.calibrate.compute_Sv(ed, env_params={"salinity": 29.6, "pressure": 60})
    mvbs = e.commongrid.compute_MVBS(sv, range_bin="10m", ping_time_bin="30s")
    ours_sv = xr.open_zarr(out / "compute_Sv" / f"{item}.zarr")
    ours_mvbs = xr.open_zarr(out / "compute_MVBS" / f"{item}.zarr")
    ours_ed = e.open_converted(str(out / "open_raw" / f"{item}.zarr"))
    assert_same(ours_sv, e.calibrate.compute_Sv(ours_ed, env_params={"salinity": 29.6, "pressure": 60}),
                exact=True)
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


def test_s3_source_and_output(public_bucket: str, private_bucket: str, s3_options: dict,
                              s3_anon_options: dict, monkeypatch) -> None:
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
    return {"run": run.model_dump(mode="json"),
            "tasks": [t.model_dump(mode="json") for t in task_runs(run_id)],
            "artifacts": [a.model_dump(mode="json") for a in artifacts(run_id)]}
