"""Diagnostics figure of the sim-to-real benchmark: where generated and real recordings of the
same images differ (per-pixel rates, inter-event intervals, ON/OFF by direction of motion,
hot pixels, events between saccades, events per saccade)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._s2r_stats import ISI_EDGES_US, PIXEL_COUNT_EDGES, pixel_intervals

#: saccade segments of N-MNIST (µs) and their motion directions (dx, dy) in px
SEGMENTS_US = ((0, 105_000), (105_000, 210_000), (210_000, 315_000))
DIRECTIONS = ((3.5, 7.0), (3.5, -7.0), (-7.0, 0.0))
PAUSES_US = ((93_000, 104_000), (198_000, 213_000))


def pixel_rates_hz(recs: list[np.ndarray], duration_s: float = 0.31) -> np.ndarray:
    """``[34 * 34]`` mean events per second of each pixel over the recordings."""
    m = np.zeros(34 * 34)
    for r in recs:
        m += np.bincount(r["y"].astype(np.int64) * 34 + r["x"], minlength=34 * 34)
    return m / max(len(recs), 1) / duration_s


def hot_pixel_excess_hz(recs: list[np.ndarray]) -> np.ndarray:
    """``[34 * 34]`` rate of each pixel above the median of its 5x5 neighbourhood (Hz): large
    only for hot pixels (a digit's pixels have neighbours that fire as often)."""
    from scipy.ndimage import median_filter

    rates = pixel_rates_hz(recs).reshape(34, 34)
    return (rates - median_filter(rates, size=5, mode="nearest")).ravel()


def on_off_separation(recs: list[np.ndarray]) -> np.ndarray:
    """``[3]`` per saccade segment: mean over recordings of (ON centroid - OFF centroid)
    projected on the unit motion direction, in px. Positive: ON events lead the motion."""
    out = np.zeros(len(SEGMENTS_US))
    for k, ((a, b), d) in enumerate(zip(SEGMENTS_US, DIRECTIONS)):
        u = np.asarray(d) / np.hypot(*d)
        vals = []
        for r in recs:
            s = r[(r["t"] >= a) & (r["t"] < b)]
            on, off = s[s["p"] == 1], s[s["p"] == 0]
            if on.size and off.size:
                c_on = np.array([on["x"].mean(), on["y"].mean()])
                c_off = np.array([off["x"].mean(), off["y"].mean()])
                vals.append(float((c_on - c_off) @ u))
        out[k] = np.mean(vals) if vals else 0.0
    return out


def events_between_saccades(recs: list[np.ndarray]) -> float:
    """Mean events per recording inside the pauses between saccades (``PAUSES_US``)."""
    n = [sum(int(((r["t"] >= a) & (r["t"] < b)).sum()) for a, b in PAUSES_US) for r in recs]
    return float(np.mean(n))


def events_per_saccade(recs: list[np.ndarray]) -> np.ndarray:
    """``[N, 3]`` events of each recording in each saccade segment."""
    return np.array([[int(((r["t"] >= a) & (r["t"] < b)).sum()) for a, b in SEGMENTS_US] for r in recs])


def diagnostics(sets: dict[str, list[np.ndarray]]) -> dict:
    """Numbers behind the figure, per set (``{"real": [...], "previous": [...], ...}``)."""
    out = {}
    for name, recs in sets.items():
        rates = pixel_rates_hz(recs)
        isi = np.concatenate([pixel_intervals(r) for r in recs])
        eps = events_per_saccade(recs)
        out[name] = {
            "mean_events": float(np.mean([r.size for r in recs])),
            "on_fraction": float(np.mean([r["p"].mean() for r in recs if r.size])),
            "pixel_rate_hz_percentiles_50_90_99_max": np.percentile(rates, [50, 90, 99, 100]).round(3).tolist(),
            "hot_pixel_excess_hz_top5": np.sort(hot_pixel_excess_hz(recs))[::-1][:5].round(2).tolist(),
            "isi_us_percentiles_1_10_50": np.percentile(isi, [1, 10, 50]).round(0).tolist(),
            "isi_below_1ms_fraction": float((isi < 1000).mean()),
            "on_minus_off_along_motion_px": on_off_separation(recs).round(3).tolist(),
            "events_between_saccades": events_between_saccades(recs),
            "events_per_saccade_mean": eps.mean(0).round(1).tolist(),
        }
    return out


def plot(path: Path, sets: dict[str, list[np.ndarray]], diag: dict, title: str) -> None:
    """Six panels comparing the sets; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_path

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    names = list(sets)
    for name in names:
        recs = sets[name]
        counts = np.concatenate([np.bincount(r["y"].astype(np.int64) * 34 + r["x"], minlength=34 * 34)
                                 for r in recs])
        h = np.histogram(counts[counts > 0], PIXEL_COUNT_EDGES)[0]
        ax[0, 0].plot(np.arange(h.size), h / h.sum(), marker="o", label=name)
        isi = np.concatenate([pixel_intervals(r) for r in recs])
        h = np.histogram(isi, ISI_EDGES_US)[0]
        ax[0, 1].plot(ISI_EDGES_US[1:-1], (h / h.sum())[1:], marker=".", label=name)
        excess = np.sort(hot_pixel_excess_hz(recs))[::-1][:20]
        ax[1, 0].semilogy(np.arange(excess.size), np.maximum(excess, 1e-2), marker=".", label=name)
        t = np.concatenate([r["t"] for r in recs])
        prof = np.bincount(np.minimum(t // 5000, 63), minlength=64) / len(recs)
        ax[1, 1].plot(np.arange(64) * 5, prof, label=name)
        ax[1, 2].hist(events_per_saccade(recs).ravel(), bins=30, histtype="step", label=name)
    ax[0, 0].set_xticks(np.arange(PIXEL_COUNT_EDGES.size - 1))
    ax[0, 0].set_xticklabels(["1", "2", "3", "4-5", "6-7", "8-10", "11-14", "15-19", "20-29", "30+"],
                             fontsize=7)
    ax[0, 0].set(title="per-pixel events per recording (active pixels)", ylabel="share")
    ax[0, 1].set_xscale("log")
    ax[0, 1].set(title="inter-event interval of a pixel", xlabel="µs", ylabel="share")
    ax[1, 0].set(title="hot pixels: rate above the 5x5 median, top 20", xlabel="rank", ylabel="Hz")
    for a, b in PAUSES_US:
        ax[1, 1].axvspan(a / 1e3, b / 1e3, color="grey", alpha=0.2)
    ax[1, 1].set(title="events / 5 ms (grey: pauses between saccades)", xlabel="ms")
    ax[1, 2].set(title="events per saccade (all three)", xlabel="events")
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax[0, 2].bar(np.arange(3) + j * width, diag[name]["on_minus_off_along_motion_px"], width, label=name)
    ax[0, 2].axhline(0, color="k", lw=0.5)
    ax[0, 2].set_xticks(np.arange(3) + 0.4 - width / 2)
    ax[0, 2].set_xticklabels([f"saccade {k + 1} ({dx:+.1f},{dy:+.1f})" for k, (dx, dy) in enumerate(DIRECTIONS)],
                             fontsize=7)
    ax[0, 2].set(title="ON/OFF by direction: ON - OFF centroid (px)")
    for a in ax.ravel():
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
