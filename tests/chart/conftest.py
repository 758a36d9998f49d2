"""Chart-only fixtures: the helm binary and the chart rendered for several value sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jobtemplate as jt  # noqa: E402
from chartcases import KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS  # noqa: E402,F401


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """Fails (never skips) when no helm can be found."""
    try:
        return jt.helm_binary()
    except jt.HelmNotFound as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def render(helm_bin):
    """render(value_set, kube="1.35") -> rendered objects, cached for the session."""
    cache: dict[tuple[str, str], list[dict]] = {}

    def _render(value_set: str, kube: str = "1.35") -> list[dict]:
        key = (value_set, kube)
        if key not in cache:
            spec = VALUE_SETS[value_set]
            cache[key] = jt.render_chart(
                spec["files"], spec["set"], release=RELEASE, namespace=NAMESPACE, kube_version=KUBE_VERSIONS[kube]
            )
        return cache[key]

    return _render
