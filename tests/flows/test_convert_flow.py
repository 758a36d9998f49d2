"""convert_raw_sonar on the real sample files, a real Prefect server and real echopype."""

from pathlib import Path

import pytest
from prefect_api import flow_run_logs, task_runs
from samples import AZFP_RAW, AZFP_XML, EK60_RAW
from util import assert_matches_direct

from echoflow.errors import RawFileError
from echoflow.flows.convert import convert_raw_sonar
from echoflow.storage import read_marker


def test_ek60_to_zarr_matches_echopype(tmp_path):
    state = convert_raw_sonar(
        raw_file=str(EK60_RAW),
        sonar_model="EK60",
        output_path=str(tmp_path / "out"),
        output_type="zarr",
        return_state=True,
    )
    assert state.is_completed(), state.message
    path = state.result()
    assert path == str(tmp_path / "out" / "DY1801_EK60-D20180211-T164025.zarr")
    assert_matches_direct(path, EK60_RAW, "EK60", tmp_path)
    assert read_marker(path, {})["source_url"] == str(EK60_RAW)

    run_id = state.state_details.flow_run_id
    names = sorted(t.name for t in task_runs(run_id))  # the two tasks, named by their file
    assert names == [f"open {EK60_RAW.name}", f"save {EK60_RAW.name}"]
    logs = "\n".join(flow_run_logs(run_id))
    for phrase in ("Opening", "Opened", "Saving", "Saved"):
        assert phrase in logs


def test_azfp_with_xml_to_netcdf_matches_echopype(tmp_path):
    out = tmp_path / "azfp.nc"
    path = convert_raw_sonar(raw_file=str(AZFP_RAW), sonar_model="AZFP", xml_path=str(AZFP_XML), output_path=str(out))
    assert path == str(out)
    assert_matches_direct(path, AZFP_RAW, "AZFP", tmp_path, xml=AZFP_XML)


def test_unknown_output_type_fails_before_reading(tmp_path):
    state = convert_raw_sonar(
        raw_file=str(EK60_RAW), sonar_model="EK60", output_path=str(tmp_path), output_type="hdf5", return_state=True
    )
    assert state.is_failed()
    assert "'netcdf'" in state.message and "'zarr'" in state.message
    assert task_runs(state.state_details.flow_run_id) == []  # no task ran: nothing was read
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # skip and overwrite: tests/flows/test_batch_flow.py
def test_complete_output_is_kept_unless_overwrite(tmp_path):
    kwargs = dict(raw_file=str(EK60_RAW), sonar_model="EK60", output_path=str(tmp_path), output_type="zarr")
    first = convert_raw_sonar(**kwargs)
    stamp = read_marker(first, {})["conversion_time"]
    again = convert_raw_sonar(**kwargs, return_state=True)
    assert task_runs(again.state_details.flow_run_id) == []
    assert read_marker(first, {})["conversion_time"] == stamp
    redo = convert_raw_sonar(**kwargs, overwrite=True, return_state=True)
    assert len(task_runs(redo.state_details.flow_run_id)) == 2


def test_wrong_model_fails_with_reason(tmp_path):
    state = convert_raw_sonar(raw_file=str(AZFP_RAW), sonar_model="EK60", output_path=str(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(
        RawFileError, match=r"17031001.01A: (does not start like EK60 data|cannot be read as EK60 data).*--sonar-model"
    ):
        state.result()
    assert not any(Path(tmp_path).iterdir())
