import pytest
from samples import AZFP_RAW, AZFP_XML, EK60_RAW
from util import junk_file, truncated_copy

from echoflow.errors import RawFileError
from echoflow.integrity import check_azfp_xml, check_raw


def test_whole_file_passes():
    check_raw(str(EK60_RAW), "EK60")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.999])
def test_truncation_is_caught(tmp_path, fraction):
    # echopype itself accepts these files and silently drops the missing pings.
    bad = truncated_copy(tmp_path, fraction)
    with pytest.raises(RawFileError, match="truncated"):
        check_raw(str(bad), "EK60")


def test_empty_file_says_zero_bytes(tmp_path):
    empty = tmp_path / "DY1801_EK60-D20180211-T000000.raw"
    empty.write_bytes(b"")
    with pytest.raises(RawFileError, match=rf"{empty.name}: 0 bytes; the file is empty"):
        check_raw(str(empty), "EK60")


def test_junk_is_caught(tmp_path):
    with pytest.raises(RawFileError, match="not a valid EK60 file"):
        check_raw(str(junk_file(tmp_path)), "EK60")


def test_wrong_simrad_family_is_named():
    with pytest.raises(RawFileError, match=r"does not start like EK80 data \(it looks like EK60/ES70 data\)"):
        check_raw(str(EK60_RAW), "EK80")


def test_formats_without_framing_pass_through():
    check_raw(str(AZFP_RAW), "AZFP")  # echopype's own parser reports AZFP damage


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"wrong\.XML: 0 bytes; the instrument XML is empty"),
        (b"\x00\x01 binary", r"wrong\.XML: not a readable XML file \(.*\); pass the AZFP instrument XML"),
        (
            b"<Config><Frequency>1</Frequency></Config>",
            r"wrong\.XML: not an AZFP instrument configuration \(root <Config>",
        ),
    ],
)
def test_azfp_xml_that_is_not_one_is_named(tmp_path, content, message):
    xml = tmp_path / "wrong.XML"
    xml.write_bytes(content)
    with pytest.raises(RawFileError, match=message):
        check_azfp_xml(str(xml), xml.name)
    check_azfp_xml(str(AZFP_XML), AZFP_XML.name)  # the instrument's own passes
