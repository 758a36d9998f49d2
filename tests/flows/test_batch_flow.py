"""convert_batch: parallel files, per-file isolation, idempotence, summary."""

import pytest
from prefect_api import artifacts, flow_run_logs, task_runs
from util import assert_matches_direct, ek60_copies, junk_file, truncated_copy

from echoflow.flows.batch import convert_batch
from echoflow.storage import read_marker


def test_bad_files_fail_alone_and_the_rest_complete(tmp_path):
    good = ek60_copies(tmp_path / "raw", 3)
    cut = truncated_copy(tmp_path / "raw", 0.5)
    junk = junk_file(tmp_path / "raw")
    missing = tmp_path / "raw" / "DY1801_EK60-D20180213-T000000.raw"
    out = tmp_path / "out"
    state = convert_batch(
        sources=[str(tmp_path / "raw" / "*.raw"), str(missing)],
        sonar_model="EK60",
        output_prefix=str(out),
        output_type="zarr",
        concurrency=2,
        return_state=True,
    )
    assert state.is_failed() and state.name == "PartiallyFailed"
    assert state.message == "6 files: 3 converted, 0 skipped (already complete), 3 failed"
    summary = state.result(raise_on_failure=False)
    by_name = {r["source"].rsplit("/", 1)[-1]: r for r in summary["files"]}
    assert len(by_name) == 6
    for p in good:
        r = by_name[p.name]
        assert r["status"] == "converted" and r["bytes"] > 1_000_000 and r["seconds"] > 0
        assert read_marker(r["output"], {})["source_url"] == str(p)
    assert_matches_direct(by_name[good[-1].name]["output"], good[-1], "EK60", tmp_path)
    assert "truncated" in by_name[cut.name]["error"]
    assert "not a valid EK60 file" in by_name[junk.name]["error"]
    assert "no such file" in by_name[missing.name]["error"]
    for bad in (cut, junk, missing):
        assert by_name[bad.name]["status"] == "failed"
        assert read_marker(str(out / (bad.stem + ".zarr")), {}) is None
    assert not list(out.rglob("*partial*"))

    run_id = state.state_details.flow_run_id
    table = [a for a in artifacts(run_id) if a.key == "echoflow-summary"]
    assert len(table) == 1 and cut.name in str(table[0].data)
    # corrupt data is not retried: one attempt per bad file
    runs = task_runs(run_id, expect=6)
    assert len(runs) == 6  # the missing file too: it fails inside its own task
    assert all(t.run_count == 1 for t in runs)
    assert any("failed:" in m for m in flow_run_logs(run_id))


def test_rerun_skips_complete_outputs_and_overwrite_redoes_them(tmp_path):
    raws = ek60_copies(tmp_path / "raw", 2)
    kwargs = dict(
        sources=[str(p) for p in raws],
        sonar_model="EK60",
        output_prefix=str(tmp_path / "out"),
        output_type="netcdf",
        concurrency=1,
    )
    first = convert_batch(**kwargs, return_state=True).result()
    assert [f["status"] for f in first["files"]] == ["converted", "converted"]
    again = convert_batch(**kwargs, return_state=True).result()
    assert [f["status"] for f in again["files"]] == ["skipped", "skipped"]
    assert [f["bytes"] for f in again["files"]] == [f["bytes"] for f in first["files"]]
    redo = convert_batch(**kwargs, overwrite=True, return_state=True).result()
    assert [f["status"] for f in redo["files"]] == ["converted", "converted"]


def test_output_name_collisions_do_not_overwrite(tmp_path):
    a = ek60_copies(tmp_path / "a", 1)[0]
    b = ek60_copies(tmp_path / "b", 1)[0]
    state = convert_batch(
        sources=[str(a), str(b)],
        sonar_model="EK60",
        output_prefix=str(tmp_path / "out"),
        concurrency=1,
        return_state=True,
    )
    files = state.result(raise_on_failure=False)["files"]
    assert [f["status"] for f in files] == ["failed", "converted"] or [f["status"] for f in files] == [
        "converted",
        "failed",
    ]
    assert "would overwrite" in next(f["error"] for f in files if f["status"] == "failed")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"output_type": "hdf5"}, "'netcdf'"),
        ({"sonar_model": "EK99"}, "unknown sonar model 'EK99'"),
        ({"sonar_model": "AZFP"}, "needs its instrument XML"),
    ],
)
def test_bad_parameters_fail_before_any_file(tmp_path, bad, message):
    raws = ek60_copies(tmp_path / "raw", 1)
    params = dict(sources=[str(raws[0])], sonar_model="EK60", output_prefix=str(tmp_path / "out"), **{})
    params.update(bad)
    state = convert_batch(**params, return_state=True)
    assert state.is_failed()
    assert message in (state.message or "") + str(state.result(raise_on_failure=False))
    assert task_runs(state.state_details.flow_run_id) == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
