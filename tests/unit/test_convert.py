"""The conversion core without Prefect: one file in, one complete output out."""

from __future__ import annotations

import pytest
from reliability_util import assert_equals_reference, reference
from samples import EK60_RAW

from echoflow import convert, storage
from echoflow.errors import RawFileError
from echoflow.params import ConvertRequest


def test_convert_file_writes_a_complete_output_equal_to_echopype(tmp_path):
    req = ConvertRequest(raw_file=str(EK60_RAW), sonar_model="EK60", output_path=str(tmp_path), output_type="zarr")
    first = convert.convert_file(req)
    assert first.status == "converted" and first.output == str(tmp_path / f"{EK60_RAW.stem}.zarr")
    marker = storage.read_marker(first.output, {})
    assert marker is not None and marker["bytes"] == first.bytes and marker["sonar_model"] == "EK60"
    assert_equals_reference(first.output, reference(EK60_RAW, tmp_path / "ref", "zarr"))
    again = convert.convert_file(req)
    assert again.status == "skipped" and again.bytes == first.bytes


def test_a_failed_conversion_leaves_nothing(tmp_path):
    raw = tmp_path / "DY1801_EK60-D20180212-T000000.raw"
    raw.write_bytes(EK60_RAW.read_bytes()[:5000])
    req = ConvertRequest(raw_file=str(raw), sonar_model="EK60", output_path=str(tmp_path / "out"))
    with pytest.raises(RawFileError, match="truncated"):
        convert.convert_file(req)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
