"""How precise must the renderer's rates be to pass the C2ST? Real recordings as their own rates.

Every renderer so far draws a recording from expected rates: the learned CNN's mean response to
the image. This study gives the sampler the best rates it could ever get, each real recording's
own counts per pixel, polarity and bin of its normalized time (30 bins, as the renderer's), and
asks the C2ST (real against these redrawn recordings, split by image as in ``sim_to_real``):

- drawn **exactly** (a renewal shape of 1000, no field, no gains, no bursts: each bin's events
  come back, only their times inside the bin are redrawn) and with the shipped sampler's parts
  (renewal shape, bursts, gains), which add their scatter on top of the real counts;
- **blurred** first, in time (a Gaussian over the bins) or in space (over the pixels), then drawn
  exactly: what a rate model whose map is that much smoother than a real recording gives;
- **mixed** with the shipped CNN's rates for the same image (a share of the real counts, the
  rest the CNN's), drawn with the shipped renewal shape: how much of a recording's own
  departure from the mean a renderer would have to supply.

It also reports the blur at which a real recording's counts correlate best with the shipped
CNN's rates for the same image (a rough measure of how smooth the CNN's map is).

Writes ``benchmarks/results/c2st_oracle.json`` (``arms``: ``c2st``, ``c2st_per_seed``, the
sampler and blur of each; ``cnn_blur``: the correlation per blur) and prints a table.

    python benchmarks/c2st_oracle.py            # ~11 min on 2 cores
    python benchmarks/c2st_oracle.py --smoke --out /tmp/oracle
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
#: (name, sampler change or None for the shipped sampler, time blur in bins, space blur in px,
#: share of the real counts in the rates: the rest is the shipped CNN's rates for the image)
ARMS = (
    ("exact counts, drawn exactly", "exact", 0.0, 0.0, 1.0),
    ("exact counts, shipped renewal shape (no gains, no bursts)", "shape", 0.0, 0.0, 1.0),
    ("exact counts, shipped sampler", None, 0.0, 0.0, 1.0),
    ("blurred in time 0.35 bin (3.6 ms), drawn exactly", "exact", 0.35, 0.0, 1.0),
    ("blurred in time 0.7 bin (7 ms), drawn exactly", "exact", 0.7, 0.0, 1.0),
    ("blurred in space 0.3 px, drawn exactly", "exact", 0.0, 0.3, 1.0),
    ("blurred in space 0.5 px, drawn exactly", "exact", 0.0, 0.5, 1.0),
    ("75 % real counts + 25 % CNN rates, shipped renewal shape", "shape", 0.0, 0.0, 0.75),
    ("50 % real counts + 50 % CNN rates, shipped renewal shape", "shape", 0.0, 0.0, 0.5),
    ("25 % real counts + 75 % CNN rates, shipped renewal shape", "shape", 0.0, 0.0, 0.25),
    ("CNN rates, shipped renewal shape", "shape", 0.0, 0.0, 0.0),
)
#: (time blur in bins, space blur in px) pairs of the CNN-smoothness estimate.
CNN_BLURS = tuple((t, s) for t in (0.0, 0.5, 1.0) for s in (0.0, 0.3, 0.5, 0.7, 1.0))


def oracle_rates(recs: list[np.ndarray], time_blur_bins: float = 0.0, space_blur_px: float = 0.0) -> np.ndarray:
    """``[N, 2, N_BINS, 34, 34]`` float64 events per polarity, bin of normalized time and pixel
    of each recording, blurred by Gaussians of those widths (totals kept; 0: none)."""
    from benchmarks.fit_learned_dvs import normalized_counts

    counts = np.stack([normalized_counts(r, N_BINS) for r in recs]).astype(np.float64)
    return blurred(counts, time_blur_bins, space_blur_px)


def blurred(counts: np.ndarray, time_blur_bins: float, space_blur_px: float) -> np.ndarray:
    """``counts`` ``[N, 2, N_BINS, 34, 34]`` blurred by Gaussians of those widths (reflected at
    the edges, so totals are kept; both 0: ``counts`` itself)."""
    from scipy.ndimage import gaussian_filter

    if time_blur_bins <= 0 and space_blur_px <= 0:
        return counts
    return gaussian_filter(counts, (0, 0, time_blur_bins, space_blur_px, space_blur_px))


def oracle_sampler(model, change: str | None):
    """The model whose sampler draws an arm's recordings: ``"exact"`` (shape 1000, no field, no
    gains, no bursts), ``"shape"`` (the same with the shipped renewal shape) or ``None``
    (the shipped sampler whole)."""
    if change is None:
        return model
    s = dataclasses.replace(model.sampler, field_sigma=0.0, gain_sigma=0.0, burst_size=1.0,
                            renewal_shape=1000.0 if change == "exact" else model.sampler.renewal_shape)
    return model.with_sampler(s).with_time_factor(None)


def arm_rates(counts: np.ndarray, cnn_rates: np.ndarray, time_blur_bins: float, space_blur_px: float,
              real_share: float) -> np.ndarray:
    """The rates of one arm of :data:`ARMS`, ``[N, 2, N_BINS, 34, 34]``: the real ``counts``
    blurred by those widths, or (``real_share`` < 1, unblurred) ``real_share`` of them plus the
    rest of the CNN's ``cnn_rates`` for the same images."""
    if real_share == 1.0:
        return blurred(counts, time_blur_bins, space_blur_px)
    return real_share * counts + (1.0 - real_share) * cnn_rates


def draw_all(model, rates: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One recording per rate array of ``rates`` ``[N, 2, N_BINS, 34, 34]`` (every channel given
    1e-6 so it may fire), all of it drawn as signal: these rates are counts that already hold the
    sensor's background, so the model's own is not added (``noise=0``)."""
    return [model.sample(r + 1e-6, rng, noise=0.0) for r in rates]


def blur_correlations(counts: np.ndarray, rates: np.ndarray, blurs=CNN_BLURS) -> list[dict]:
    """Correlation over all cells of real ``counts`` ``[N, 2, N_BINS, 34, 34]`` (float64, as
    :func:`oracle_rates` bins them), blurred by each ``(time, space)`` of ``blurs``, with the
    CNN's ``rates`` (same layout) of the same images."""
    out = []
    for t, s in blurs:
        b = blurred(counts, t, s)
        out.append({"time_blur_bins": t, "space_blur_px": s,
                    "correlation": float(np.corrcoef(b.ravel(), rates.ravel())[0, 1])})
    return out


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result

    t_start = time.perf_counter()
    study = load_study(study_parser(__doc__, "unused here"), argv)
    result: dict = {"n_bins": N_BINS, "model": str(study.model.path), "arms": {}}
    rng = np.random.default_rng(study.args.seed)
    shipped = [study.model.sample(r, rng) for r in study.rates]
    acc = study.c2st(shipped)
    result["shipped_renderer"] = {"c2st_per_seed": acc, "c2st": float(np.mean(acc))}
    print(f"  {'shipped renderer (same run)':62s} C2ST {np.mean(acc):.3f}", flush=True)
    counts = oracle_rates(study.real)
    for name, change, t_blur, s_blur, own in ARMS:
        model = oracle_sampler(study.model, change)
        rng = np.random.default_rng(study.args.seed)
        gen = draw_all(model, arm_rates(counts, study.rates, t_blur, s_blur, own), rng)
        acc = study.c2st(gen)
        result["arms"][name] = {"sampler": "shipped" if change is None else change,
                                "time_blur_bins": t_blur, "space_blur_px": s_blur, "real_share": own,
                                "c2st_per_seed": acc, "c2st": float(np.mean(acc))}
        print(f"  {name:62s} C2ST {np.mean(acc):.3f}  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    held = study.held[:150]
    result["cnn_blur"] = blur_correlations(counts[held], study.rates[held])
    best = max(result["cnn_blur"], key=lambda r: r["correlation"])
    print(f"  the CNN's rates correlate best with real counts blurred by {best['time_blur_bins']} bin, "
          f"{best['space_blur_px']} px ({best['correlation']:.3f})")
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_oracle", result)
    return result


if __name__ == "__main__":
    main()
