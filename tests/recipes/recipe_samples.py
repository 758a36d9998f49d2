"""The EK60 sample copied under several names and times, for the recipe tests."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from pathlib import Path

from samples import EK60_RAW

EK60_TIME = datetime(2018, 2, 11, 16, 40, 25)  # from the sample's name
COPY_TIMES = [EK60_TIME, EK60_TIME + timedelta(minutes=20), EK60_TIME + timedelta(hours=1)]


def simrad_name(t: datetime) -> str:
    return f"DY1801_EK60-D{t:%Y%m%d}-T{t:%H%M%S}.raw"


def shifted(data: bytes, delta: timedelta) -> bytes:
    """Simrad .raw datagrams with every datagram's time moved by `delta`."""
    out = bytearray(data)
    ticks = int(delta.total_seconds() * 10_000_000)  # NT time: 100 ns since 1601
    off = 0
    while off < len(out):
        (length,) = struct.unpack_from("<i", out, off)
        low, high = struct.unpack_from("<II", out, off + 8)  # after <length><type>
        t = (high << 32 | low) + ticks
        struct.pack_into("<II", out, off + 8, t & 0xFFFFFFFF, t >> 32)
        off += length + 8
    return bytes(out)


def shifted_copy(src: Path, dst: Path, delta: timedelta) -> Path:
    """Copy a Simrad .raw file with its times moved by `delta`, so copies named for other
    times also hold those times (echopype combines files in time order)."""
    dst.write_bytes(shifted(src.read_bytes(), delta))
    return dst


def repeated_pings(dst: Path, times: int, src: Path = EK60_RAW) -> Path:
    """A longer Simrad .raw file: the configuration datagram once, then the sample's other
    datagrams `times` times over, each repeat 72 s (the sample's span and a ping) later."""
    data = src.read_bytes()
    (first,) = struct.unpack_from("<i", data, 0)
    body = data[first + 8 :]
    dst.write_bytes(data[: first + 8] + b"".join(shifted(body, timedelta(seconds=72 * i)) for i in range(times)))
    return dst


def make_batch(folder: Path, times: list[datetime]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [shifted_copy(EK60_RAW, folder / simrad_name(t), t - EK60_TIME) for t in times]


def adjacent_copies(folder: Path, seconds: list[int]) -> list[Path]:
    """Copies of the 70 s EK60 sample starting `seconds` after it: 72 s apart, each file's
    last 20 s bin is also the next file's first."""
    folder.mkdir(parents=True)
    return [
        shifted_copy(EK60_RAW, folder / simrad_name(EK60_TIME + timedelta(seconds=s)), timedelta(seconds=s))
        for s in seconds
    ]


def group_recipe(
    folder: Path, out: Path, concurrency: int = 2, extra: str = "", mvbs: str = "range_bin: 20m, ping_time_bin: 20s"
) -> str:
    """Files → Sv → MVBS per file, then the MVBS of the group `dy`."""
    return f"""
name: dy
source: {{url: {folder}}}
sonar_model: EK60
concurrency: {concurrency}
quicklook: {{enabled: false}}
output: {{prefix: {out}}}
stages: [open_raw, combine_echodata, compute_Sv, {{compute_MVBS: {{{mvbs}}}}}]
{extra}"""
