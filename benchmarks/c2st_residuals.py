"""What local structure do the real recordings have that the renderer's draws lack? Residuals at 10 ms.

The oracle study (``c2st_oracle.py``) found that the C2ST needs rates as sharp as one recording:
a real recording differs from the rate CNN's mean in *where* its events fall. This study measures
that difference where it lives, in the residuals ``r = (C - M) / sqrt(M)`` of a recording's counts
``C`` per polarity, bin of normalized time (30 bins of ~10 ms) and pixel about the CNN's expected
events ``M`` for its image, over the active cells (``M > 0.2``): their variance and their
correlation with the neighbouring cell in x, in y, one and two bins later, with the other
polarity in the same bin, and with the other polarity one bin later. Independent draws about a
mean give correlations near 0; real recordings do not.

It then tries a latent that places the events: each recording's signal rates are sharpened in
time (Richardson-Lucy deconvolution by a Gaussian of ``sharpen_bins``) and every pixel's mass is
moved in time by a smooth random field (sd ``shift_bins``, correlation ``scale_px`` in space and
``scale_bins`` in time; shared by both polarities; totals per pixel kept), so that the mean over
recordings stays about the CNN's map while each recording is sharp where it is. Two more arms only
sharpen the rates in space (no latent): if the CNN's map were a blurred copy of a sharp response
the image determines, that would bring it closer to the real counts. Each arm reports the residual
statistics, the correlation of its mean rates with the real counts (``mean_rate_correlation``),
the C2ST (real against generated, split by image as in ``sim_to_real``) and three single-view
C2STs.

Writes ``benchmarks/results/c2st_residuals.json`` (``real``: the held-out real recordings'
statistics; ``arms``: each arm's ``params``, ``stats``, ``c2st``, ``c2st_per_seed``, ``views``)
and prints a table.

    python benchmarks/c2st_residuals.py            # ~8 min on 2 cores
    python benchmarks/c2st_residuals.py --smoke --out /tmp/residuals
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_BINS = 30
#: Cells whose expected events per bin are above this enter the statistics.
ACTIVE = 0.2
#: (name, sampler fields changed, latent shift or None, time gain kept)
ARMS = (
    ("shipped renderer", {}, None, True),
    ("no bursts", {"burst_size": 1.0}, None, True),
    ("no bursts + shift 0.3 bin on rates sharpened by 0.3 bin", {"burst_size": 1.0},
     {"sharpen_bins": 0.3, "shift_bins": 0.3, "scale_px": 1.5, "scale_bins": 3.0}, True),
    ("no bursts + shift 0.25 bin (5-bin correlation) on rates sharpened by 0.4 bin", {"burst_size": 1.0},
     {"sharpen_bins": 0.4, "shift_bins": 0.25, "scale_px": 1.5, "scale_bins": 5.0}, True),
    ("shift 0.3 bin on rates sharpened by 0.3 bin, no time gain", {},
     {"sharpen_bins": 0.3, "shift_bins": 0.3, "scale_px": 1.5, "scale_bins": 3.0}, False),
    ("rates sharpened in space by 0.3 px, no shift", {}, {"sharpen_bins": 0.0, "sharpen_px": 0.3, "shift_bins": 0.0}, True),
    ("rates sharpened in space by 0.5 px, no shift", {}, {"sharpen_bins": 0.0, "sharpen_px": 0.5, "shift_bins": 0.0}, True),
)
VIEWS = ("count_image", "count_image_4x4_blocks", "time_profile_T30")


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def residual_stats(counts: np.ndarray, rates: np.ndarray, active: float = ACTIVE) -> dict[str, float]:
    """Variance and neighbour correlations of ``(counts - rates) / sqrt(rates)`` over the cells
    with ``rates > active``; both ``[N, 2, n_bins, 34, 34]`` (polarity 1 is ON)."""
    r = (counts - rates) / np.sqrt(np.maximum(rates, 1e-9))
    a = rates > active
    return {
        "variance": float(r[a].var()),
        "x+1": _corr(r[..., 1:], r[..., :-1], a[..., 1:] & a[..., :-1]),
        "y+1": _corr(r[..., 1:, :], r[..., :-1, :], a[..., 1:, :] & a[..., :-1, :]),
        "t+1": _corr(r[:, :, 1:], r[:, :, :-1], a[:, :, 1:] & a[:, :, :-1]),
        "t+2": _corr(r[:, :, 2:], r[:, :, :-2], a[:, :, 2:] & a[:, :, :-2]),
        "on,off": _corr(r[:, 1], r[:, 0], a[:, 1] & a[:, 0]),
        "on,off t+1": _corr(r[:, 1, :-1], r[:, 0, 1:], a[:, 1, :-1] & a[:, 0, 1:]),
        "off,on t+1": _corr(r[:, 0, :-1], r[:, 1, 1:], a[:, 0, :-1] & a[:, 1, 1:]),
    }


def sharpen(signal: np.ndarray, sigma_bins: float, sigma_px: float = 0.0, iterations: int = 10) -> np.ndarray:
    """``signal`` ``[2, n_bins, 34, 34]`` deconvolved by a Gaussian of ``sigma_bins`` along the
    bins and ``sigma_px`` over the pixels (Richardson-Lucy: stays >= 0, totals about kept);
    both 0: unchanged."""
    from scipy.ndimage import gaussian_filter

    if sigma_bins <= 0 and sigma_px <= 0:
        return signal
    sigma = (0.0, sigma_bins, sigma_px, sigma_px)
    x = signal + 1e-9
    for _ in range(iterations):
        estimate = gaussian_filter(x, sigma, mode="nearest") + 1e-12
        x = x * gaussian_filter(signal / estimate, sigma, mode="nearest")
    return x


def shift_in_time(signal: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Each cell's mass of ``signal`` ``[2, n_bins, 34, 34]`` moved ``shift`` ``[n_bins, 34, 34]``
    bins later (shared by both polarities; split between the two bins it lands between, clipped
    to the recording), so that every pixel keeps its total."""
    nb = signal.shape[1]
    _, yy, xx = np.indices(shift.shape)
    target = np.arange(nb)[:, None, None] + shift
    lower = np.floor(target).astype(np.int64)
    frac = target - lower
    out = np.zeros_like(signal)
    for dest, weight in ((lower, 1.0 - frac), (lower + 1, frac)):
        dest = np.clip(dest, 0, nb - 1)
        for p in range(2):
            np.add.at(out[p], (dest, yy, xx), signal[p] * weight)
    return out


class ShiftedSampler:
    """A renderer whose signal rates are sharpened in time and shifted by a smooth random field
    per recording before the model's own sampler draws them (see the module docstring).

    Args:
        model: the :class:`~flexsnn.data.learned_dvs.LearnedDVS` whose sampler draws.
        sharpen_bins, shift_bins: deconvolution width and shift sd, in bins.
        scale_px, scale_bins: the shift field's Gaussian correlation widths.
        sharpen_px: deconvolution width over the pixels (0: none).
    """

    def __init__(self, model, *, sharpen_bins: float, shift_bins: float, scale_px: float = 1.5,
                 scale_bins: float = 3.0, sharpen_px: float = 0.0) -> None:
        self.model, self.sharpen_bins, self.shift_bins = model, sharpen_bins, shift_bins
        self.sharpen_px = sharpen_px
        self.scale = (scale_bins, scale_px, scale_px)

    def _signal(self, rates: np.ndarray) -> np.ndarray:
        """The signal part of ``rates`` ``[2, n_bins, 34, 34]`` (background excluded), sharpened."""
        signal = np.maximum(rates - self.model.noise_rates(), 0.0)
        return sharpen(signal, self.sharpen_bins, self.sharpen_px)

    def mean_rates(self, rates: np.ndarray) -> np.ndarray:
        """``rates`` ``[2, n_bins, 34, 34]`` sharpened, before any shift."""
        return self._signal(rates) + self.model.noise_rates()

    def shift_field(self, rng: np.random.Generator) -> np.ndarray:
        """One recording's shift ``[n_bins, 34, 34]`` in bins (sd ``shift_bins``)."""
        from scipy.ndimage import gaussian_filter

        z = gaussian_filter(rng.standard_normal((self.model.n_bins, 34, 34)), self.scale, mode="wrap")
        return self.shift_bins * z / max(float(z.std()), 1e-12)

    def sample(self, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        signal = self._signal(rates)
        if self.shift_bins > 0:
            signal = shift_in_time(signal, self.shift_field(rng))
        return self.model.sample(signal + self.model.noise_rates(), rng)


def arm_renderer(model, fields: dict, shift: dict | None, time_gain: bool):
    """The renderer of one arm of :data:`ARMS`."""
    m = model.with_sampler(dataclasses.replace(model.sampler, **fields)) if fields else model
    if not time_gain:
        m = m.with_time_factor(None)
    return m if shift is None else ShiftedSampler(m, **shift)


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks.fit_learned_dvs import normalized_counts

    t_start = time.perf_counter()
    study = load_study(study_parser(__doc__, "unused here"), argv)
    held = study.held

    def counts(recs):
        return np.stack([normalized_counts(r, N_BINS) for r in recs]).astype(np.float64)

    rates = study.rates[held]
    real_counts = counts([study.real[i] for i in held])
    result: dict = {"n_bins": N_BINS, "active": ACTIVE, "model": str(study.model.path),
                    "real": residual_stats(real_counts, rates), "arms": {}}
    print(f"  {'real (held-out)':74s} " + " ".join(f"{k} {v:+.3f}" for k, v in result["real"].items()))
    for name, fields, shift, time_gain in ARMS:
        renderer = arm_renderer(study.model, fields, shift, time_gain)
        rng = np.random.default_rng(study.args.seed)
        gen = [renderer.sample(r, rng) for r in study.rates]
        stats = residual_stats(counts([gen[i] for i in held]), rates)
        mean = rates if shift is None else np.stack([renderer.mean_rates(r) for r in rates])
        stats["mean_rate_correlation"] = float(np.corrcoef(mean.ravel(), real_counts.ravel())[0, 1])
        acc = study.c2st(gen)
        views = study.views(gen, VIEWS)
        result["arms"][name] = {"params": {"sampler": fields, "shift": shift, "time_gain": time_gain},
                                "stats": stats, "c2st_per_seed": acc, "c2st": float(np.mean(acc)),
                                "views": views}
        print(f"  {name:74s} " + " ".join(f"{k} {v:+.3f}" for k, v in stats.items() if k in result["real"]))
        print(f"  {'':74s} C2ST {np.mean(acc):.3f}  " + "  ".join(f"{k} {views[k]:.2f}" for k in VIEWS)
              + f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_residuals", result)
    return result


if __name__ == "__main__":
    main()
