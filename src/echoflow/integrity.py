"""Structural checks that catch truncated raw files echopype would accept silently.

echopype stops reading a Simrad file at the first short datagram and returns what it
read, so a file cut in transfer converts "successfully" with pings missing. Simrad
formats frame every datagram as <int32 length><body><int32 length>; walking the
frames proves the file is whole without parsing it.
"""

from __future__ import annotations

import struct
from pathlib import Path

from echoflow.errors import RawFileError

SIMRAD_MODELS = {"EK60", "ES70", "EK80", "ES80", "EA640"}
# First datagram type of each Simrad family: EK60/ES70 start with CON0, EK80-style with XML0.
FIRST_DATAGRAM = {"EK60": b"CON0", "ES70": b"CON0", "EK80": b"XML0", "ES80": b"XML0", "EA640": b"XML0"}
MAX_DATAGRAM = 64 * 1024 * 1024


def check_simrad_framing(path: str, sonar_model: str) -> None:
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        offset = 0
        first = True
        while offset < size:
            head = f.read(4)
            if len(head) < 4:
                raise RawFileError(_cut(path, offset, size))
            (length,) = struct.unpack("<i", head)
            if length <= 0 or length > MAX_DATAGRAM:
                raise RawFileError(
                    f"{path}: not a valid {sonar_model} file (bad datagram length {length} at byte "
                    f"{offset}); check --sonar-model and that the file is a Simrad .raw recording"
                )
            if first:
                kind = f.read(4)
                expected = FIRST_DATAGRAM[sonar_model]
                if kind != expected:
                    other = [m for m, k in FIRST_DATAGRAM.items() if k == kind]
                    hint = f" (it looks like {'/'.join(other)} data)" if other else ""
                    raise RawFileError(f"{path}: does not start like {sonar_model} data{hint}; check --sonar-model")
                f.seek(-4, 1)
                first = False
            f.seek(length, 1)
            tail = f.read(4)
            if len(tail) < 4:
                raise RawFileError(_cut(path, offset, size))
            if struct.unpack("<i", tail)[0] != length:
                raise RawFileError(
                    f"{path}: corrupt datagram at byte {offset} (lengths disagree); "
                    "the file is damaged: fetch it again from the source"
                )
            offset += length + 8


def _cut(path: str, offset: int, size: int) -> str:
    return (
        f"{path}: truncated ({size} bytes; the datagram at byte {offset} is cut short); "
        "the file is incomplete: fetch it again from the source"
    )


def check_raw(path: str, sonar_model: str) -> None:
    """Run the structural check that exists for this model's format, if any."""
    if Path(path).stat().st_size == 0:
        raise RawFileError(f"{path}: 0 bytes; the file is empty (an interrupted transfer?): fetch it again")
    if sonar_model in SIMRAD_MODELS:
        check_simrad_framing(path, sonar_model)


def check_azfp_xml(xml: str, shown_as: str) -> None:
    """An AZFP instrument XML parses and is an AZFP configuration (echopype's own errors for
    a wrong XML name neither the XML nor the problem)."""
    import xml.etree.ElementTree as ET

    if Path(xml).stat().st_size == 0:
        raise RawFileError(f"{shown_as}: 0 bytes; the instrument XML is empty")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise RawFileError(
            f"{shown_as}: not a readable XML file ({exc}); pass the AZFP instrument XML "
            "(.XML) that belongs to these files with --xml"
        ) from None
    if root.tag != "AZFP" or root.find(".//Phases") is None or root.find(".//Frequency") is None:
        raise RawFileError(
            f"{shown_as}: not an AZFP instrument configuration (root <{root.tag}>, expected <AZFP> "
            "with <Phases> and <Frequency>); pass the .XML written by the instrument with --xml"
        )
