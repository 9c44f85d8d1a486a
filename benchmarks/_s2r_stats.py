"""Statistics that compare generated and real recordings of the same images, as a classifier
sees them (binned frames), for the sim-to-real benchmark and the generator fit.

- :func:`paired_frame_correlation`: mean over pairs, bins and polarities of the Pearson
  correlation between the real and the generated ``[T, 2, 34, 34]`` count frames, at several T.
- :func:`count_profile`: mean events per (bin, polarity) at T = 10.
- :func:`pixel_count_hist`, :func:`isi_hist`: distributions of events per active pixel per
  recording and of inter-event intervals of a pixel (log-spaced).
- :func:`discrepancy`: one number (0 = identical statistics), the fit's objective.
"""

from __future__ import annotations

import numpy as np

SENSOR = (34, 34, 2)
FIT_T = (3, 5, 10)
PIXEL_COUNT_EDGES = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 30, 1e9])
ISI_EDGES_US = np.concatenate([[0], np.geomspace(200, 300_000, 16), [1e12]])


def frames(recs: list[np.ndarray], T: int) -> np.ndarray:
    """``[N, T, 2, 34, 34]`` float32 count frames (tonic's ToFrame slicing)."""
    from flexsnn.data.frames import events_to_frames

    return np.stack([events_to_frames(r, SENSOR, T) for r in recs])


def count_images(recs: list[np.ndarray]) -> np.ndarray:
    """``[N, 2, 34, 34]`` float64 events per pixel and polarity (whole recording)."""
    return frames(recs, 1)[:, 0].astype(np.float64)


def _rowcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of ``[M, D]`` arrays (0 where a row is constant)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-12), 0.0)


def paired_frame_correlation(real: list[np.ndarray], gen: list[np.ndarray],
                             Ts=FIT_T) -> dict[int, float]:
    """``{T: mean correlation}`` of the paired per-bin, per-polarity count images."""
    out = {}
    for T in Ts:
        fr, fg = frames(real, T), frames(gen, T)
        n = fr.shape[0] * T * 2
        out[int(T)] = float(_rowcorr(fr.reshape(n, -1), fg.reshape(n, -1)).mean())
    return out


def count_profile(recs: list[np.ndarray], T: int = 10) -> np.ndarray:
    """``[T, 2]`` mean events per bin and polarity."""
    return frames(recs, T).sum((3, 4)).mean(0)


def pixel_count_hist(recs: list[np.ndarray]) -> np.ndarray:
    """Share of active pixels (of a recording) with 1, 2, 3, 4-5, ... events."""
    counts = []
    for r in recs:
        c = np.bincount(r["y"].astype(np.int64) * 34 + r["x"], minlength=34 * 34)
        counts.append(c[c > 0])
    h = np.histogram(np.concatenate(counts), PIXEL_COUNT_EDGES)[0].astype(float)
    return h / max(h.sum(), 1.0)


def onoff_balance_hist(recs: list[np.ndarray], min_events: int = 4) -> np.ndarray:
    """Share of pixels (with ``>= min_events`` events in their recording) whose ON fraction
    falls in each tenth of [0, 1]: how evenly a pixel's events split between polarities."""
    shares = []
    for r in recs:
        pix = r["y"].astype(np.int64) * 34 + r["x"]
        tot = np.bincount(pix, minlength=34 * 34)
        on = np.bincount(pix, weights=r["p"].astype(float), minlength=34 * 34)
        keep = tot >= min_events
        shares.append(on[keep] / tot[keep])
    h = np.histogram(np.concatenate(shares), np.linspace(0.0, 1.0, 11))[0].astype(float)
    return h / max(h.sum(), 1.0)


def pixel_intervals(r: np.ndarray) -> np.ndarray:
    """Intervals (µs) between consecutive events of the same pixel, all pixels of ``r``."""
    pix = r["y"].astype(np.int64) * 34 + r["x"]
    o = np.lexsort((r["t"], pix))
    same = np.diff(pix[o]) == 0
    return np.diff(r["t"][o].astype(np.int64))[same]


def isi_hist(recs: list[np.ndarray]) -> np.ndarray:
    """Share of same-pixel inter-event intervals in log-spaced bins (``ISI_EDGES_US``)."""
    h = np.histogram(np.concatenate([pixel_intervals(r) for r in recs]), ISI_EDGES_US)[0].astype(float)
    return h / max(h.sum(), 1.0)


def discrepancy(real: list[np.ndarray], gen: list[np.ndarray], *, real_cache: dict | None = None
                ) -> tuple[float, dict]:
    """The fit's objective: ``(1 - mean paired frame correlation over T in FIT_T)`` plus the
    squared log ratio of the mean events per (bin, polarity) at T = 10 and at T = 30 (the
    saccades' time course), plus the L1 distances of the per-pixel count, inter-event-interval
    and ON/OFF-balance distributions (halved). Returns the total and its parts.
    ``real_cache`` (a dict) keeps the real side's distributions between calls."""
    rc = real_cache if real_cache is not None else {}
    if "profile" not in rc:
        rc["profile"] = count_profile(real)
        rc["profile30"] = count_profile(real, 30)
        rc["balance"] = onoff_balance_hist(real)
        rc["pix"] = pixel_count_hist(real)
        rc["isi"] = isi_hist(real)
    corr = paired_frame_correlation(real, gen)
    prof = count_profile(gen)
    prof30 = count_profile(gen, 30)
    parts = {
        "frame_corr": float(np.mean(list(corr.values()))),
        "count_log_ratio_sq": float(np.mean(np.log((prof + 1.0) / (rc["profile"] + 1.0)) ** 2)),
        "pixel_count_l1": float(np.abs(pixel_count_hist(gen) - rc["pix"]).sum()),
        "isi_l1": float(np.abs(isi_hist(gen) - rc["isi"]).sum()),
        "profile30_log_ratio_sq": float(np.mean(np.log((prof30 + 1.0) / (rc["profile30"] + 1.0)) ** 2)),
        "onoff_balance_l1": float(np.abs(onoff_balance_hist(gen) - rc["balance"]).sum()),
    }
    total = (1.0 - parts["frame_corr"]) + parts["count_log_ratio_sq"] + parts["profile30_log_ratio_sq"] \
        + 0.5 * (parts["pixel_count_l1"] + parts["isi_l1"] + parts["onoff_balance_l1"])
    parts["corr_by_T"] = corr
    return float(total), parts
