"""The sample builders the recipe tests and benchmarks use make files echopype reads as meant."""

from __future__ import annotations

import numpy as np
from recipe_samples import EK60_TIME, repeated_pings, shifted_copy, simrad_name
from samples import EK60_RAW


def pings(path) -> np.ndarray:
    from echoflow._echopype import load

    return load().open_raw(str(path), sonar_model="EK60")["Sonar/Beam_group1"]["ping_time"].values


def test_a_longer_file_holds_the_samples_pings_over_and_over_in_time_order(tmp_path):
    once = pings(EK60_RAW)
    longer = repeated_pings(tmp_path / "longer.raw", 3)
    thrice = pings(longer)
    assert len(thrice) == 3 * len(once)
    assert (np.diff(thrice) > np.timedelta64(0)).all()
    assert thrice[0] == once[0] and thrice[len(once)] == once[0] + np.timedelta64(72, "s")


def test_a_shifted_copy_holds_the_time_in_its_name(tmp_path):
    from datetime import timedelta

    when = EK60_TIME + timedelta(hours=2)
    copy = shifted_copy(EK60_RAW, tmp_path / simrad_name(when), when - EK60_TIME)
    assert pings(copy)[0] - pings(EK60_RAW)[0] == np.timedelta64(2, "h")
