"""Figures of simulation results (matplotlib, Agg backend; written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexsnn.deploy.backend import RunResult
from flexsnn.io_utils import atomic_path


def raster_png(path: str | Path, events: np.ndarray, result: RunResult, *, sensor_width: int,
               title: str = "") -> Path:
    """Two-panel raster of one sample: input events (pixel index ``y*W + x``, colour =
    polarity) and the output core's events (feature / channel) over time (ms after the first
    input event). Written atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = int(events["t"][0]) if events.size else 0
    fig, (ax_in, ax_out) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                        gridspec_kw={"height_ratios": [2, 1]})
    if events.size:
        pix = events["y"].astype(np.int64) * sensor_width + events["x"]
        for pol, colour in ((1, "tab:red"), (0, "tab:blue")):
            sel = events["p"] == pol
            ax_in.scatter((events["t"][sel] - t0) / 1e3, pix[sel], s=0.5, c=colour,
                          label="ON" if pol else "OFF", rasterized=True)
        ax_in.legend(loc="upper right", markerscale=10)
    ax_in.set_ylabel("input pixel (y*W + x)")
    ax_in.set_title(title or f"{events.size} input events -> {result.events.size} output events")
    out = result.events
    if out.size:
        for core in np.unique(out["core"]):
            sel = out["core"] == core
            ax_out.scatter((out["t"][sel] - t0) / 1e3, out["feature"][sel], s=6, marker="|",
                           label=f"core {int(core)}")
        ax_out.legend(loc="upper right")
    ax_out.set_ylabel("output feature")
    ax_out.set_xlabel("time after first input event (ms)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
