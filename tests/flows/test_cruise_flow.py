"""convert_cruise run locally (chunks as subflows): gathering, partial failure, re-run."""

from util import ek60_copies, truncated_copy

from echoflow.flows.cruise import convert_cruise
from echoflow.storage import read_marker


def test_cruise_chunks_gather_and_rerun_only_missing(tmp_path):
    raws = ek60_copies(tmp_path / "raw", 3)
    cut = truncated_copy(tmp_path / "raw", 0.3)
    out = tmp_path / "out"
    kwargs = dict(
        sources=[str(tmp_path / "raw" / "*.raw")],
        sonar_model="EK60",
        output_prefix=str(out),
        files_per_job=2,
        concurrency=1,
        batch_deployment=None,
    )
    state = convert_cruise(**kwargs, return_state=True)
    assert state.name == "PartiallyFailed"
    files = {f["source"].rsplit("/", 1)[-1]: f for f in state.result(raise_on_failure=False)["files"]}
    assert len(files) == 4
    assert all(files[r.name]["status"] == "converted" for r in raws)
    assert files[cut.name]["status"] == "failed" and "truncated" in files[cut.name]["error"]
    for r in raws:
        assert read_marker(str(out / f"{r.stem}.nc"), {}) is not None

    cut.write_bytes(raws[0].read_bytes())  # the file is fetched again, whole
    again = convert_cruise(**kwargs, return_state=True)
    assert again.is_completed(), again.message
    statuses = {f["source"].rsplit("/", 1)[-1]: f["status"] for f in again.result()["files"]}
    assert statuses == {**{r.name: "skipped" for r in raws}, cut.name: "converted"}
