from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture
def run_cli(prefect_server, tmp_path):
    """Run the installed `echoflow` command against the session's Prefect server."""

    def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "ECHOFLOW_HOME": str(tmp_path / "home"),
            "COLUMNS": "200",
            **(env or {}),
        }
        return subprocess.run(
            [str(BIN / "echoflow"), *args], capture_output=True, text=True, env=full_env, timeout=timeout
        )

    return run
