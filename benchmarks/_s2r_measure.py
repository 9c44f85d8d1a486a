"""What tells real N-MNIST recordings from generated ones, measured on paired recordings of the
same images; and the generator settings measured from them (``benchmarks/c2st_attempts.py``).

Every ``measure_*`` function sees the FIT half only (even rank within the class); the held-out
half is for checking.

- :func:`paired_diagnosis`: the numbers that explain the C2ST (noise polarity, per-pixel count
  histograms, per-recording gain and timing spread, ON share per time bin) and small logistic
  regressions on single features, to tell "shape" from "scale/timing".
- :func:`measure_noise`: share of file polarity 1 among isolated events (background noise).
- :func:`measure_timing`: per-saccade 10/50/90 % event-time percentiles, real minus generated,
  mean and spread over recordings: the time-warp knots of the generator.
- :func:`measure_gain`: spread of log(real / generated event count) over recordings.
- :func:`measure_end`: mean and spread of the real recordings' last event time.
- :func:`measure_threshold_map`: the real sensor's per-pixel sensitivity (high-pass log ratio
  of real to generated counts per pixel, turned into a threshold multiplier).
- :func:`measure_noise_map`: the real sensor's per-pixel background-noise rate.
"""

from __future__ import annotations

import numpy as np

from benchmarks._s2r_stats import count_images

#: (start, end) µs of the three saccades, for the timing percentiles
SACCADE_SPANS_US = ((0.0, 100_000.0), (95_000.0, 215_000.0), (210_000.0, 316_000.0))
#: pixel-count histogram range per polarity: 1..16 (16 = 16 or more)
MAX_COUNT = 16


def pixel_count_hist(counts: np.ndarray) -> np.ndarray:
    """``[N, 2, MAX_COUNT]`` per recording and polarity: pixels with 1, 2, ... (last: >=) events."""
    c = np.clip(counts.astype(np.int64), 0, MAX_COUNT)
    n = counts.shape[0]
    out = np.zeros((n, 2, MAX_COUNT + 1))
    for k in range(MAX_COUNT + 1):
        out[:, :, k] = (c == k).sum((2, 3))
    return out[:, :, 1:]


def _logreg_accuracy(xr: np.ndarray, xg: np.ndarray, fit: np.ndarray, ho: np.ndarray) -> float:
    """Held-out accuracy of an L2 logistic regression real (1) vs generated (0) on ``[N, D]``
    features (trained on the fit positions, tested on the held-out ones)."""
    from sklearn.linear_model import LogisticRegression

    xr, xg = xr.reshape(len(xr), -1), xg.reshape(len(xg), -1)
    xtr, xte = np.concatenate([xr[fit], xg[fit]]), np.concatenate([xr[ho], xg[ho]])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    ytr = np.r_[np.ones(len(fit)), np.zeros(len(fit))]
    yte = np.r_[np.ones(len(ho)), np.zeros(len(ho))]
    m = LogisticRegression(C=0.1, max_iter=3000).fit((xtr - mu) / sd, ytr)
    return float(m.score((xte - mu) / sd, yte))


def _fixed_bins(recs: list[np.ndarray], width_us: float = 10_500.0, n: int = 30) -> np.ndarray:
    """``[N, n, 2]`` events per fixed time bin (from t = 0) and polarity."""
    edges = np.arange(n + 1) * width_us
    return np.array([[np.histogram(r["t"][r["p"] == q], edges)[0] for q in (0, 1)] for r in recs],
                    dtype=np.float64).transpose(0, 2, 1)


def isolated_polarity(counts: np.ndarray) -> tuple[float, float]:
    """Share of polarity 1 among the pixels with exactly one event in their recording, and
    how many such pixels a recording has (mean)."""
    one = counts.sum(1) == 1
    return float(counts[:, 1][one].sum() / max(one.sum(), 1)), float(one.sum() / len(counts))


def _percentiles(recs: list[np.ndarray]) -> np.ndarray:
    """``[N, 9]`` µs: 10/50/90 % event times inside each saccade span."""
    out = np.full((len(recs), 3 * len(SACCADE_SPANS_US)), np.nan)
    for i, r in enumerate(recs):
        t = r["t"].astype(np.float64)
        for s, (lo, hi) in enumerate(SACCADE_SPANS_US):
            ts = t[(t >= lo) & (t < hi)]
            if ts.size > 10:
                out[i, 3 * s:3 * s + 3] = np.percentile(ts, [10, 50, 90])
    return out


def paired_diagnosis(real: list[np.ndarray], gen: list[np.ndarray], held_out: np.ndarray) -> dict:
    """Paired comparison of ``real[i]`` and ``gen[i]`` (same image); ``held_out`` (bool per
    pair) splits the logistic regressions into train (fit half) and test (held-out half)."""
    fit, ho = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    cr, cg = count_images(real), count_images(gen)
    hr, hg = pixel_count_hist(cr), pixel_count_hist(cg)
    nr, ng = cr.sum((1, 2, 3)), cg.sum((1, 2, 3))
    pr, pg = _percentiles(real), _percentiles(gen)
    fr, fg = _fixed_bins(real), _fixed_bins(gen)
    on_r = fr[:, :, 1] / np.maximum(fr.sum(2), 1)
    on_g = fg[:, :, 1] / np.maximum(fg.sum(2), 1)
    d_on = on_r - on_g

    def lr(xr, xg):
        return _logreg_accuracy(xr, xg, fit, ho)

    return {
        "events_mean": [float(nr.mean()), float(ng.mean())],
        "events_log_sd": [float(np.log(nr).std()), float(np.log(ng).std())],
        "log_gain_real_over_generated_sd": float(np.log(nr / ng).std()),
        "isolated_pixels_p1_share": [isolated_polarity(cr)[0], isolated_polarity(cg)[0]],
        "sensor_pattern": sensor_pattern(real, gen, held_out),
        "pause_events_90_100ms": [float(np.mean([((r["t"] >= 90_000) & (r["t"] < 100_000)).sum() for r in x]))
                                  for x in (real, gen)],
        "isolated_pixels_per_recording": [isolated_polarity(cr)[1], isolated_polarity(cg)[1]],
        "active_pixels": [float((cr.sum(1) > 0).sum((1, 2)).mean()),
                          float((cg.sum(1) > 0).sum((1, 2)).mean())],
        "pixel_count_hist_p0": [hr[:, 0].mean(0).round(2).tolist(), hg[:, 0].mean(0).round(2).tolist()],
        "pixel_count_hist_p1": [hr[:, 1].mean(0).round(2).tolist(), hg[:, 1].mean(0).round(2).tolist()],
        "pixel_count_hist_l1": float(np.abs(hr.mean(0) - hg.mean(0)).sum() / hr.mean(0).sum()),
        "saccade_time_percentiles_ms": {
            "real_mean": (np.nanmean(pr, 0) / 1e3).round(2).tolist(),
            "generated_mean": (np.nanmean(pg, 0) / 1e3).round(2).tolist(),
            "real_sd": (np.nanstd(pr, 0) / 1e3).round(2).tolist(),
            "generated_sd": (np.nanstd(pg, 0) / 1e3).round(2).tolist()},
        "on_share_per_10ms_bin": {"real": on_r.mean(0).round(3).tolist(),
                                  "generated": on_g.mean(0).round(3).tolist(),
                                  "paired_t": (d_on.mean(0) / (d_on.std(0) + 1e-9)
                                               * np.sqrt(len(d_on))).round(1).tolist()},
        "logreg_c2st": {
            "count_image_log1p": lr(np.log1p(cr), np.log1p(cg)),
            "count_image_over_total": lr(cr / nr[:, None, None, None], cg / ng[:, None, None, None]),
            "active_pixel_map": lr((cr.sum(1) > 0) * 1.0, (cg.sum(1) > 0) * 1.0),
            "pixel_count_hist_per_polarity": lr(hr, hg),
            "sorted_pixel_counts_top300": lr(-np.sort(-cr.sum(1).reshape(len(cr), -1), 1)[:, :300],
                                             -np.sort(-cg.sum(1).reshape(len(cg), -1), 1)[:, :300]),
            "time_profile_log1p": lr(np.log1p(fr), np.log1p(fg)),
            "time_profile_over_total": lr(fr / nr[:, None, None], fg / ng[:, None, None]),
            "time_profile_polarity_merged": lr(np.log1p(fr.sum(2)), np.log1p(fg.sum(2))),
            "on_share_per_bin": lr(on_r, on_g),
            "saccade_time_percentiles": lr(np.nan_to_num(pr), np.nan_to_num(pg)),
        },
    }


def sensor_pattern(real: list[np.ndarray], gen: list[np.ndarray], held_out: np.ndarray,
                   smooth_px: float = 2.0, min_events: float = 2000.0) -> dict:
    """Is there a fixed per-pixel pattern in the real sensor? Per pixel, the high-passed log
    ratio of real to generated events (summed over one half's recordings) and the real
    background-noise rate (events per recording where the pixel is outside the digit); their
    sd (or coefficient of variation) and the correlation between the two halves (pixels with
    >= ``min_events`` generated events in each half, resp. >= 100 background samples)."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    cr, cg = count_images(real).sum(1), count_images(gen).sum(1)
    halves = (~held_out, held_out)

    def high(idx):
        r, g = cr[idx].sum(0), cg[idx].sum(0)
        ratio = np.log((r + 20.0) / (g + 20.0))
        return ratio - gaussian_filter(ratio, smooth_px, mode="nearest"), g

    (h1, g1), (h2, g2) = (high(i) for i in halves)
    ok = (g1 >= min_events) & (g2 >= min_events)
    outside = np.array([~binary_dilation(a + b >= 3, iterations=2) for a, b in zip(cr, cg)])

    def noise(idx):
        n = outside[idx].sum(0)
        return (cr[idx] * outside[idx]).sum(0) / np.maximum(n, 1), n

    (r1, n1), (r2, n2) = (noise(i) for i in halves)
    okn = (n1 >= 100) & (n2 >= 100)

    def enough(mask, value):  # None where too few pixels qualify (small sets)
        return float(value()) if mask.sum() >= 10 else None

    return {"sensitivity_log_ratio_sd": enough(ok, lambda: h1[ok].std()),
            "sensitivity_split_half_corr": enough(ok, lambda: np.corrcoef(h1[ok], h2[ok])[0, 1]),
            "noise_rate_cv_real": enough(okn, lambda: r1[okn].std() / r1[okn].mean()),
            "noise_rate_split_half_corr_real": enough(okn, lambda: np.corrcoef(r1[okn], r2[okn])[0, 1]),
            "pixels": [int(ok.sum()), int(okn.sum())]}


def measure_noise(real_fit: list[np.ndarray]) -> float:
    """Share of file polarity 1 among isolated events (pixels with one event in their
    recording): the background noise's polarity."""
    return isolated_polarity(count_images(real_fit))[0]


def measure_timing(real_fit: list[np.ndarray], gen_fit: list[np.ndarray],
                   duration_us: float = 315_000.0) -> dict:
    """Time-warp knots (the generated recordings' mean percentiles, with 0 and the duration as
    fixed ends), their mean shift (real - generated) and spread (the part of the paired
    difference's variance the generated set does not have), µs."""
    pr, pg = _percentiles(real_fit), _percentiles(gen_fit)
    d = pr - pg
    sd = np.sqrt(np.clip(np.nanvar(d, 0) - np.nanvar(pg, 0), 0.0, None))
    knots = np.r_[0.0, np.nanmean(pg, 0), duration_us]
    return {"time_warp_knots_us": tuple(round(float(v), 1) for v in knots),
            "time_warp_shift_us": tuple(round(float(v), 1) for v in np.r_[0.0, np.nanmean(d, 0), 0.0]),
            "time_warp_sigma_us": tuple(round(float(v), 1) for v in np.r_[0.0, sd, 0.0])}


def measure_gain(real_fit: list[np.ndarray], gen_fit: list[np.ndarray]) -> float:
    """Std over recordings of log(real / generated event count)."""
    nr = np.array([len(r) for r in real_fit], float)
    ng = np.array([len(g) for g in gen_fit], float)
    return float(np.log(nr / ng).std())


def measure_end(real_fit: list[np.ndarray]) -> dict:
    """Mean and std (µs) of the real recordings' last event time."""
    last = np.array([float(r["t"][-1]) for r in real_fit])
    return {"end_us": round(float(last.mean()), 1), "end_jitter_us": round(float(last.std()), 1)}


def measure_threshold_map(real_fit: list[np.ndarray], generate, *, iterations: int = 2,
                          kappa: float = 1.05, smooth_px: float = 2.0,
                          min_events: float = 200.0) -> np.ndarray:
    """The real sensor's per-pixel threshold multipliers ``[34 * 34]`` (row-major).

    ``generate(threshold_map)`` returns generated recordings of the same images as
    ``real_fit``. Per pixel, the log ratio of real to generated events (summed over the
    recordings) minus its Gaussian-smoothed version (``smooth_px``: the digit's size and
    placement are not the sensor's) is turned into a multiplier ``exp(-w * L / kappa)``
    (``kappa``: d log(events) / d log(threshold), measured 1.05 for v4); ``w`` = 1 for pixels
    with >= ``min_events`` generated events, less for dimmer ones (1 where they have none)."""
    from scipy.ndimage import gaussian_filter

    r = count_images(real_fit).sum((0, 1))
    m = np.ones((34, 34))
    for _ in range(iterations):
        g = count_images(generate(tuple(m.ravel()))).sum((0, 1))
        ratio = np.log((r + 20.0) / (g + 20.0))
        high = ratio - gaussian_filter(ratio, smooth_px, mode="nearest")
        w = np.clip(g / min_events, 0.0, 1.0)
        m = m * np.exp(-w * high / kappa)
    return m.ravel()


def measure_noise_map(real_fit: list[np.ndarray], hot_pixels=(), *, min_samples: int = 50) -> np.ndarray:
    """The real sensor's per-pixel background-noise rate ``[34 * 34]`` (row-major), as
    multipliers with mean 1: each pixel's events per recording in the recordings where it is
    outside the digit's footprint (pixels with >= 3 events, dilated by 2 px). Pixels outside
    the footprint in fewer than ``min_samples`` recordings (or a quarter of them, in a small
    set), and the listed hot pixels (the
    generator adds those separately), get the median."""
    from scipy.ndimage import binary_dilation

    c = count_images(real_fit).sum(1)
    outside = np.array([~binary_dilation(k >= 3, iterations=2) for k in c])
    n = outside.sum(0)
    rate = (c * outside).sum(0) / np.maximum(n, 1)
    ok = n >= min(min_samples, max(len(c) // 4, 1))
    for x, y, _hz in hot_pixels:
        ok[int(y), int(x)] = False
    if not ok.any() or rate[ok].sum() <= 0:
        return np.ones(34 * 34)
    rate = np.where(ok, rate, np.median(rate[ok]))
    return (rate / rate.mean()).ravel()
