"""Echograms as acousticians read them: echopype's EK500 palette on one fixed Sv range."""

import io

import numpy as np
import pandas as pd
import xarray as xr

from echoflow import quicklook


def sv_dataset(values: np.ndarray) -> xr.Dataset:
    pings, samples = values.shape[1:]
    t = pd.date_range("2018-02-11T16:40:25", periods=pings, freq="1s").values
    return xr.Dataset(
        {
            "Sv": (("channel", "ping_time", "range_sample"), values),
            "echo_range": (
                ("channel", "ping_time", "range_sample"),
                np.broadcast_to(np.arange(samples, dtype=float), values.shape).copy(),
            ),
        },
        coords={"channel": ["GPT  38 kHz", "GPT 120 kHz"], "ping_time": t, "range_sample": np.arange(samples)},
    )


def dominant(png: bytes) -> tuple[int, int, int]:
    """The colour covering most of the image apart from the white background: the echogram's cells."""
    from collections import Counter

    from matplotlib.image import imread

    img = (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int)
    counts = Counter(tuple(int(c) for c in p) for p in img.reshape(-1, 3))
    return next(c for c, _ in counts.most_common() if c != (255, 255, 255))


def test_fixed_range_and_ek500_palette():
    # channel 0 quiet (-75 dB), channel 1 loud (-35 dB): with a shared fixed range they get
    # different colours; a per-channel percentile scale would paint both the same
    values = np.stack([np.full((40, 30), -75.0), np.full((40, 30), -35.0)])
    ds = sv_dataset(values)
    quiet, loud = (quicklook.echogram_png(ds, ch, "t") for ch in ds["channel"].values)
    cmap = quicklook.ek500()
    lo, hi = quicklook.DEFAULT_VMIN, quicklook.DEFAULT_VMAX
    expect = [tuple(int(round(c * 255)) for c in cmap((v - lo) / (hi - lo))[:3]) for v in (-75.0, -35.0)]
    assert expect[0] != expect[1]
    assert (dominant(quiet), dominant(loud)) == (expect[0], expect[1])
    assert quicklook.color_range(None, None) == (-80.0, -30.0) and quicklook.color_range(-90, -20) == (-90.0, -20.0)
    assert cmap.name == "ek500"


def test_markdown_links_pngs_without_embedding_them():
    grams = [
        quicklook.Echogram(channel="GPT  38 kHz", url="/data/out/quicklook/compute_Sv/a.GPT_38_kHz.png", bytes=10),
        quicklook.Echogram(channel="GPT 120 kHz", url="https://bucket.example/q/a.png", bytes=10),
    ]
    md = quicklook.markdown_index([("compute_Sv", "a", g) for g in grams])
    assert "(/data/out/quicklook/compute_Sv/a.GPT_38_kHz.png)" in md
    assert "![GPT 120 kHz](https://bucket.example/q/a.png)" in md  # web images show inline
    assert "base64" not in md and "-80 to -30 dB" in md
