from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _api(prefect_server):
    """Every flow test talks to the session's real Prefect server."""
    yield prefect_server
