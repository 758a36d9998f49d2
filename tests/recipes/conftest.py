"""Fixtures of the recipe tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipe_samples import COPY_TIMES, make_batch


@pytest.fixture(scope="session")
def ek60_batch(tmp_path_factory, data_dir) -> list[Path]:
    """Three copies of the EK60 sample, 0, 20 and 60 minutes apart (names and contents)."""
    return make_batch(tmp_path_factory.mktemp("ek60-batch") / "EK60", COPY_TIMES)
