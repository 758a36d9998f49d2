import pytest
from samples import AZFP_RAW, EK60_RAW
from util import junk_file, truncated_copy

from echoflow.errors import RawFileError
from echoflow.integrity import check_raw


def test_whole_file_passes():
    check_raw(str(EK60_RAW), "EK60")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.999])
def test_truncation_is_caught(tmp_path, fraction):
    # echopype itself accepts these files and silently drops the missing pings.
    bad = truncated_copy(tmp_path, fraction)
    with pytest.raises(RawFileError, match="truncated"):
        check_raw(str(bad), "EK60")


def test_junk_is_caught(tmp_path):
    with pytest.raises(RawFileError, match="not a valid EK60 file"):
        check_raw(str(junk_file(tmp_path)), "EK60")


def test_wrong_simrad_family_is_named():
    with pytest.raises(RawFileError, match=r"does not start like EK80 data \(it looks like EK60/ES70 data\)"):
        check_raw(str(EK60_RAW), "EK80")


def test_formats_without_framing_pass_through():
    check_raw(str(AZFP_RAW), "AZFP")  # echopype's own parser reports AZFP damage
