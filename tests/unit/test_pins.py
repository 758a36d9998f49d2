"""The environment is exactly the tested set in constraints.txt, and avoids known breakages."""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.version import Version

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[.*\])?==([^\s;]+)", line)
        if m:
            found[m.group(1).lower()] = m.group(3)
    return found


def test_installed_versions_are_the_pinned_ones():
    mismatched = {}
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # platform-specific extras (e.g. for other OSes) may be absent
        if Version(installed) != Version(pinned):
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"environment differs from constraints.txt (pinned, installed): {mismatched}"


def test_core_stack_is_pinned_and_avoids_known_breakages():
    p = pins()
    for name in ("echopype", "xarray", "zarr", "prefect", "prefect-kubernetes", "fastapi", "s3fs", "fsspec"):
        assert name in p, f"{name} is not pinned"
    assert Version(p["xarray"]) < Version("2026.9")  # echopype 0.11.1 to_zarr breaks on 2026.9
    assert Version(p["fastapi"]) < Version("0.150")  # prefect's server fails to start from 0.150


def test_the_stack_imports_together():
    import echopype
    import prefect
    import prefect_kubernetes  # noqa: F401
    import s3fs  # noqa: F401
    import xarray
    import zarr  # noqa: F401

    from echoflow.params import sonar_models

    assert echopype.__version__ == pins()["echopype"] and prefect.__version__ == pins()["prefect"]
    assert xarray.__version__ == pins()["xarray"] and "EK60" in sonar_models()
