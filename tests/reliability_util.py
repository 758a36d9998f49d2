"""Helpers for the reliability tests and the stress script: run the real CLI, compare
outputs with a clean conversion, find what a run left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import xarray as xr

EXE = str(Path(sys.executable).parent / "echoflow")
IGNORED_GROUPS = {"Provenance"}  # names the source file and the conversion time: differs per copy


def start_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [EXE, *args],
        env={**os.environ, "COLUMNS": "200", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def reference(raw: Path, folder: Path, fmt: str) -> Any:
    """echopype's own conversion of `raw`, opened."""
    import echopype as ep

    path = folder / ("reference.zarr" if fmt == "zarr" else "reference.nc")
    if not path.exists():
        ed = ep.open_raw(str(raw), sonar_model="EK60")
        (ed.to_zarr if fmt == "zarr" else ed.to_netcdf)(str(path), overwrite=True)
    return ep.open_converted(str(path))


def assert_equals_reference(output: str, ref: Any, storage_options: Optional[dict] = None) -> None:
    import tempfile

    import echopype as ep

    if output.endswith(".nc") and "://" in output:  # echopype opens netCDF only from local disk
        from echoflow import storage

        fs, path = storage.filesystem(output, storage_options)
        local = Path(tempfile.mkdtemp()) / Path(path).name
        fs.get_file(path, str(local))
        output, storage_options = str(local), None
    ours = ep.open_converted(output, storage_options=storage_options or {})
    groups = sorted(g for g in ref.group_paths if ref[g] is not None)
    assert sorted(g for g in ours.group_paths if ours[g] is not None) == groups, output
    for g in groups:
        if g not in IGNORED_GROUPS:
            xr.testing.assert_equal(ours[g], ref[g])


def leftovers(folder: Path) -> list[str]:
    """Staging, partials and locks left under a local output folder."""
    return sorted(str(p) for p in folder.rglob("*") if ".echoflow-staging" in p.parts or ".partial-" in p.name)


def pool_workers(cli: subprocess.Popen, expect: int, timeout: float = 120) -> list[Any]:
    """The CLI's worker processes (psutil), once `expect` of them run. They are forked by
    the fork server, so they are the CLI's grandchildren; its children are the server and
    multiprocessing's resource tracker, which killing would test nothing."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cli.poll() is None:
        kids = [c for c in psutil.Process(cli.pid).children(recursive=True) if c.ppid() != cli.pid]
        workers = [c for c in kids if "multiprocessing" in " ".join(c.cmdline())]
        if len(workers) >= expect:
            return workers
        time.sleep(0.05)
    raise AssertionError("the CLI never started its worker processes")


def wait_until_writing(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until a conversion under `out` has a partial output staged (the moment to interrupt)."""
    import time

    staging = out / ".echoflow-staging"
    deadline = time.monotonic() + timeout
    while not (staging.exists() and list(staging.glob("*.partial-*"))):
        assert time.monotonic() < deadline and proc.poll() is None, "conversion never started writing"
        time.sleep(0.05)
