"""A stage's result written through the in-memory store is the same zarr, file for file and
byte for byte, as zarr's own writer makes; a lazy result is still written in its chunks."""

from pathlib import Path

import numpy as np
import xarray as xr

from echoflow.recipes import stages


def mvbs_like() -> xr.Dataset:
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "Sv": (("channel", "ping_time", "echo_range"), rng.normal(-70, 5, (3, 4, 13))),
            "sample_count": (("channel", "ping_time", "echo_range"), rng.integers(0, 99, (3, 4, 13), dtype="uint32")),
            "frequency_nominal": ("channel", [18e3, 38e3, 120e3]),
        },
        coords={
            "channel": ["a", "b", "c"],
            "ping_time": np.array(
                ["2018-02-11T16:40:00", "2018-02-11T16:40:20", "2018-02-11T16:40:40", "2018-02-11T16:41:00"],
                dtype="datetime64[ns]",
            ),
            "echo_range": np.arange(13) * 20.0,
        },
        attrs={"processing_function": "commongrid.compute_MVBS"},
    )
    ds["Sv"].attrs["units"] = "dB"
    return ds


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_small_result_is_the_zarr_zarrs_writer_makes(tmp_path):
    ds = mvbs_like()
    staged = tmp_path / "staged.zarr"
    staged.mkdir()  # as staging_path reserves it
    stages.write(ds, staged)
    ds.to_zarr(tmp_path / "direct.zarr", mode="w")
    assert files(staged) == files(tmp_path / "direct.zarr")
    xr.testing.assert_identical(xr.open_zarr(staged).load(), ds)


def test_a_lazy_result_is_written_in_its_chunks(tmp_path):
    """A group's join arrives lazy (dask): zarr's writer streams it, chunk by chunk."""
    ds = mvbs_like().chunk({"ping_time": 2})
    staged = tmp_path / "staged.zarr"
    staged.mkdir()
    stages.write(ds, staged)
    assert {"Sv/c/0/0/0", "Sv/c/0/1/0"} <= set(files(staged))
    xr.testing.assert_identical(xr.open_zarr(staged).load(), ds.load())
