"""Helpers shared by tests: sample copies, bad files, comparison with direct echopype."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import xarray as xr
from samples import EK60_RAW

EK60_TIMES = [f"D20180211-T{h:02d}{m:02d}25" for h in range(16, 24) for m in range(0, 60, 10)]


def ek60_copies(folder: Path, n: int, prefix: str = "DY1801_EK60") -> list[Path]:
    """n copies of the EK60 sample named with the instrument's -DYYYYMMDD-THHMMSS convention."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for stamp in EK60_TIMES[:n]:
        p = folder / f"{prefix}-{stamp}.raw"
        shutil.copyfile(EK60_RAW, p)
        out.append(p)
    return out


def truncated_copy(folder: Path, fraction: float = 0.5, name: str = "DY1801_EK60-D20180212-T000000.raw") -> Path:
    data = EK60_RAW.read_bytes()
    p = folder / name
    p.write_bytes(data[: int(len(data) * fraction)])
    return p


def junk_file(folder: Path, name: str = "DY1801_EK60-D20180212-T010000.raw") -> Path:
    p = folder / name
    p.write_bytes(b"not a sonar file " * 500)
    return p


def assert_matches_direct(
    output: str,
    raw: Path,
    model: str,
    tmp: Path,
    xml: Optional[Path] = None,
    storage_options: Optional[dict[str, Any]] = None,
    source_url: Optional[str] = None,
) -> None:
    """The converted output holds the same groups and values as echopype's own conversion.

    `source_url`: where echoflow read the raw file from when not `raw` itself (S3); the
    output must name it as its source.
    """
    import echopype as ep

    ours = ep.open_converted(output, storage_options=storage_options or {})
    direct = ep.open_raw(str(raw), sonar_model=model, xml_path=str(xml) if xml else None)
    ref_path = tmp / ("direct" + (".zarr" if output.rstrip("/").endswith(".zarr") else ".nc"))
    if ref_path.suffix == ".zarr":
        direct.to_zarr(str(ref_path), overwrite=True)
    else:
        direct.to_netcdf(str(ref_path), overwrite=True)
    ref = ep.open_converted(str(ref_path))
    groups = [g for g in ref.group_paths if ref[g] is not None]
    assert groups and "Sonar/Beam_group1" in groups
    assert sorted(g for g in ours.group_paths if ours[g] is not None) == sorted(groups)
    for g in groups:
        a, b = ours[g], ref[g]
        if g == "Provenance" and source_url:
            assert list(a["source_filenames"].values) == [source_url]
            names = [v for v in b.data_vars if str(v).endswith("source_filenames")]
            assert all(str(x).startswith(source_url.rsplit("/", 1)[0]) for n in names for x in a[n].values)
            a, b = a.drop_vars(names), b.drop_vars(names)
        xr.testing.assert_equal(a, b)
    prov = ours["Provenance"].attrs
    assert prov["echoflow_sonar_model"] == model
    assert prov["echoflow_source_url"].endswith(raw.name)
    assert prov["echoflow_echopype_version"] == ep.__version__
    assert prov["echoflow_version"] and prov["echoflow_conversion_time"]
