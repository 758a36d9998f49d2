"""Per-file MVBS carry the sample and ping counts behind each cell (the weights that merge
bins two files share): counted with numpy, they must equal flox's binned count over the
same intervals, which is how compute_MVBS bins."""

import pytest
from samples import AZFP_RAW, AZFP_XML, EK60_RAW

from echoflow._echopype import load
from echoflow.recipes.chain import sample_count

AZFP_ENV = {"env_params": {"temperature": 10, "salinity": 30, "pressure": 10}}


def flox_counts(sv, mvbs, p):
    import numpy as np
    import pandas as pd
    from echopype.commongrid.utils import _convert_bins_to_interval_index
    from flox.xarray import xarray_reduce

    closed, size = p.get("closed", "left"), float(p["range_bin"].removesuffix("m"))
    ranges = np.arange(0, sv["echo_range"].max(skipna=True) + size, size)
    lefts = pd.DatetimeIndex(mvbs["ping_time"].values)
    pings = lefts.union([lefts[-1] + pd.Timedelta(p["ping_time_bin"])]).values
    return xarray_reduce(
        sv["Sv"],
        sv["channel"],
        sv["ping_time"],
        sv["echo_range"],
        expected_groups=(
            None,
            _convert_bins_to_interval_index(pings, closed=closed),
            _convert_bins_to_interval_index(ranges, closed=closed),
        ),
        isbin=[False, True, True],
        func="count",
        fill_value=0,
    )


@pytest.fixture(scope="module")
def svs():
    ep = load()
    ek60 = ep.calibrate.compute_Sv(ep.open_raw(str(EK60_RAW), sonar_model="EK60"))
    azfp = ep.calibrate.compute_Sv(ep.open_raw(str(AZFP_RAW), sonar_model="AZFP", xml_path=str(AZFP_XML)), **AZFP_ENV)
    return {"EK60": ek60, "AZFP": azfp}


@pytest.mark.parametrize("model", ["EK60", "AZFP"])
@pytest.mark.parametrize(
    "params",
    [
        {"range_bin": "20m", "ping_time_bin": "20s"},
        {"range_bin": "7m", "ping_time_bin": "3s"},
        {"range_bin": "5m", "ping_time_bin": "10s", "closed": "right"},
    ],
)
def test_counts_match_the_binned_count_of_the_samples(svs, model, params):
    sv = svs[model]
    mvbs = sample_count(sv, load().commongrid.compute_MVBS(sv, **params), params)
    expected = flox_counts(sv, mvbs, params)
    assert mvbs["sample_count"].dims == mvbs["Sv"].dims
    assert (
        mvbs["sample_count"].values == expected.transpose("channel", "ping_time_bins", "echo_range_bins").values
    ).all()
    if params.get("closed", "left") == "left":  # (a, b] leaves out a ping on the first edge
        assert int(mvbs["ping_count"].sum()) == sv.sizes["ping_time"]
    # every non-empty MVBS cell averages at least one sample, every empty one none
    assert ((mvbs["sample_count"] > 0) == mvbs["Sv"].notnull()).all()
