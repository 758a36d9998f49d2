"""Quick-look echograms: one PNG per channel of an Sv or MVBS output, saved next to the
outputs (`<prefix>/quicklook/<stage>/<item>.<channel>.png`) so a user sees the data
without opening it; runs link them from a markdown artifact (no image in the database).
Drawn as acousticians read them: echopype's EK500 palette on one fixed Sv range (default
-80...-30 dB) for every channel and file, so colours compare. Pure matplotlib (Agg, no
pyplot: tasks draw from several threads).
"""

from __future__ import annotations

import io
import math
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from echoflow import storage

if TYPE_CHECKING:
    import xarray as xr

SV_LABEL = r"Sv (dB re 1 m$^{-1}$)"
MAX_PINGS = 2000  # columns drawn; longer records are thinned (a quick look, not the data)
MAX_SAMPLES = 1000
DEFAULT_VMIN, DEFAULT_VMAX = -80.0, -30.0  # dB: the usual EK500 display range


class Echogram(BaseModel):
    channel: str
    url: str
    bytes: int


def channel_token(channel: str) -> str:
    """A file-name-safe form of a channel id ('GPT  18 kHz 0090720 1-1' -> 'GPT_18_kHz_0090720_1-1')."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", channel.strip()).strip("_") or "channel"


def png_url(prefix: str, stage: str, item: str, channel: str) -> str:
    return f"{prefix.rstrip('/')}/quicklook/{stage}/{item}.{channel_token(channel)}.png"


def _vertical(ds: "xr.Dataset", channel: Any) -> tuple[str, "xr.DataArray"]:
    """Depth when the dataset has it, else echo_range, for one channel."""
    name = "depth" if "depth" in ds.variables else "echo_range"
    v = ds[name]
    return name, v.sel(channel=channel) if "channel" in v.dims else v


def _grid(ds: "xr.Dataset", channel: Any) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(vertical name, ping times, vertical axis, Sv[ping, vertical]), thinned to a drawable size."""
    sv = ds["Sv"].sel(channel=channel)
    rdim = next(d for d in sv.dims if d != "ping_time")
    tstep = max(1, math.ceil(sv.sizes["ping_time"] / MAX_PINGS))
    rstep = max(1, math.ceil(sv.sizes[rdim] / MAX_SAMPLES))
    sv = sv.transpose("ping_time", rdim).isel({"ping_time": slice(None, None, tstep), rdim: slice(None, None, rstep)})
    name, vert = _vertical(ds, channel)
    vert = vert.isel({d: slice(None, None, rstep) for d in vert.dims if d == rdim})
    if "ping_time" in vert.dims:
        # Sv: range per ping; draw on the axis of the ping that reaches deepest.
        vert = vert.isel(ping_time=slice(None, None, tstep)).transpose("ping_time", rdim)
        values = vert.values
        row = int(np.argmax(np.isfinite(values).sum(axis=1)))
        y = values[row]
    else:
        y = np.asarray(vert.values, dtype=float)
    c = np.asarray(sv.values, dtype=float)
    keep = np.isfinite(y)
    return name, sv["ping_time"].values, y[keep], c[:, keep]


def _with_gaps(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blank columns where pings pause (between files) so cells do not stretch over the gap."""
    if len(t) < 3:
        return t, c
    dt = np.diff(t)
    step = np.median(dt)
    gaps = np.nonzero(dt > 5 * step)[0]
    if not len(gaps):
        return t, c
    # Two blank columns per gap: one after its last ping, one before the next ping.
    at = np.repeat(gaps + 1, 2)
    t = np.insert(t, at, np.column_stack([t[gaps] + step, t[gaps + 1] - step]).ravel())
    c = np.insert(c, at, np.nan, axis=0)
    return t, c


def color_range(vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """The same limits for every channel and file (never scaled to the data), so colours compare."""
    lo = DEFAULT_VMIN if vmin is None else float(vmin)
    hi = DEFAULT_VMAX if vmax is None else float(vmax)
    return (lo, hi) if hi > lo else (lo, lo + 1)


def ek500() -> Any:
    """echopype's EK500 colour map (grey, blue, green, yellow, red, brown; white below the range)."""
    from echopype.colormap.cm import cmap_d

    return cmap_d["ek500"]


def echogram_png(
    ds: "xr.Dataset", channel: Any, title: str, vmin: float | None = None, vmax: float | None = None
) -> bytes:
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name, t, y, c = _grid(ds, channel)
    fig = Figure(figsize=(9, 3.6), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if c.size and len(t) > 1 and len(y) > 1:
        t, c = _with_gaps(t, c)
        x = mdates.date2num(t.astype("datetime64[ms]").astype(object))
        lo, hi = color_range(vmin, vmax)
        mesh = ax.pcolormesh(x, y, c.T, shading="nearest", vmin=lo, vmax=hi, cmap=ek500())
        fig.colorbar(mesh, ax=ax, label=SV_LABEL, extend="both")
        ax.xaxis_date()
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "too few pings or samples to draw", ha="center", transform=ax.transAxes)
    ax.set_ylabel("Depth (m)" if name == "depth" else "Range (m)")
    ax.set_xlabel("Ping time (UTC)")
    ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _put(data: bytes, url: str, options: dict[str, Any] | None) -> None:
    if storage.is_remote(url):
        fs, path = storage.filesystem(url, options)
        fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        return
    target = Path(url.removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def existing(
    dataset_url: str, prefix: str, stage: str, item: str, channels: list[str], options: dict[str, Any] | None
) -> list[Echogram] | None:
    """The echograms already saved for these channels, or None when any is missing."""
    fs, _ = storage.filesystem(prefix, options)
    found = []
    for ch in channels:
        url = png_url(prefix, stage, item, ch)
        _, path = storage.filesystem(url, options)
        if not fs.exists(path):
            return None
        found.append(Echogram(channel=ch, url=storage.public_url(url), bytes=fs.size(path)))
    return found


def render(
    dataset_url: str,
    prefix: str,
    stage: str,
    item: str,
    options: dict[str, Any] | None,
    vmin: float | None = None,
    vmax: float | None = None,
    redo: bool = True,
) -> list[Echogram]:
    """One echogram PNG per channel of the Sv / MVBS output at `dataset_url`."""
    import xarray as xr

    ds = xr.open_zarr(dataset_url, storage_options=options or None)
    try:
        channels = [str(c) for c in ds["channel"].values]
        if not redo:
            done = existing(dataset_url, prefix, stage, item, channels, options)
            if done is not None:
                return done
        out = []
        for ch in channels:
            png = echogram_png(ds, ch, f"{item} · {stage} · {ch}", vmin, vmax)
            url = png_url(prefix, stage, item, ch)
            _put(png, url, options)
            out.append(Echogram(channel=ch, url=storage.public_url(url), bytes=len(png)))
        return out
    finally:
        ds.close()


def markdown_index(rows: list[tuple[str, str, Echogram]], vmin: float | None = None, vmax: float | None = None) -> str:
    """A markdown page linking every echogram (stage, item, echogram); web URLs show inline."""
    lo, hi = color_range(vmin, vmax)
    lines = [
        "# Quick-look echograms",
        "",
        f"EK500 palette, Sv {lo:g} to {hi:g} dB re 1 m⁻¹ for every channel; time in UTC.",
        "",
        "| stage | item | channel | echogram |",
        "| --- | --- | --- | --- |",
    ]
    for stage, item, g in rows:
        link = f"[{g.url.rsplit('/', 1)[-1]}]({g.url})"
        if g.url.startswith(("http://", "https://")):
            link = f"![{g.channel}]({g.url}) {link}"
        lines.append(f"| {stage} | {item} | {g.channel} | {link} |")
    return "\n".join(lines) + "\n"
