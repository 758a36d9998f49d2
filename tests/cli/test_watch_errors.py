"""Bad input to `echoflow watch`: one clear line, exit 2, nothing written."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "args, expected",
    [
        (["{tmp}/missing", "-m", "EK60"], "{tmp}/missing: no such folder; check the path"),
        (["{tmp}", "-m", "EK99"], "unknown sonar model 'EK99': echopype supports"),
        (["{tmp}", "-m", "EK60", "-f", "hdf5"], "unknown output_type 'hdf5'"),
        (["{tmp}", "-m", "EK60", "--recipe", "{tmp}/nope.yaml"], "nope.yaml"),
    ],
)
def test_bad_input_is_one_line(run_cli, tmp_path, args, expected):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_cli("watch", *argv, "-o", str(out), env={"COLUMNS": "250"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected.replace("{tmp}", str(tmp_path)) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
