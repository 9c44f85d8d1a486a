"""Which frame statistics give the generated recordings away, and does fixing them move the C2ST?

Issue 16's classifier two-sample test tells real N-MNIST recordings from the learned renderer's
at 0.97. This study asks it of single statistics of the T = 10 count frames, each with an L2
logistic regression trained on the fit half's pairs and tested on the held-out half's
(:func:`frame_views`): the histogram of per-pixel counts in each frame and polarity, the
active pixels and events per frame, the correlation of neighbouring pixels' counts (x and y),
of a pixel's counts in consecutive frames, and of ON and OFF at one pixel.

Then it replaces the renderer's sampler by a model fitted at that scale
(``benchmarks/_frame_counts.py``: one categorical per pixel, polarity and frame, the shipped
rates' Poisson plus a fitted CNN correction) and reports its held-out likelihood, its views
and its C2ST beside the shipped renderer's, in the same run.

Last, hybrids of the real recordings ask whether the cue is in single pixels or in their
arrangement: each keeps the real counts per pixel, polarity and frame, with the times inside a
frame drawn from the shipped profile, and then moves each active pixel's whole frame-count
vector to another pixel of the same recording whose expected profile is alike
(:func:`permute_pixels`). Every frame's count histogram, every frame's total and every pixel's
split among frames stay real; only which pixel holds which vector changes.

Writes ``benchmarks/results/c2st_frames.json`` (``shipped``, ``frame_model`` and each of
``hybrids``: ``c2st``, ``c2st_per_seed`` and ``views``; the frame model's ``fit``) and prints
a table.

Usage::

    python benchmarks/c2st_frames.py            # ~5 min on 2 cores
    python benchmarks/c2st_frames.py --smoke --out /tmp/frames
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Per-frame count classes of the histogram view: 1, 2, 3, 4 and >= 5 events.
HIST_MAX = 5


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over the last two axes (0 where either side is constant)."""
    a = a - a.mean((-2, -1), keepdims=True)
    b = b - b.mean((-2, -1), keepdims=True)
    den = np.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1)))
    return np.where(den > 0, (a * b).sum((-2, -1)) / np.maximum(den, 1e-12), 0.0)


def frame_views(frames: np.ndarray) -> dict[str, np.ndarray]:
    """``{view: [N, D] features}`` of count frames ``[N, T, 2, 34, 34]`` (tonic's ToFrame layout).

    ``count histogram per frame``: for each frame and polarity, the share of its active pixels
    holding 1, 2, 3, 4 and >= 5 events (``[N, T * 2 * 5]``); ``... pooled``: the same over all
    frames; ``active pixels per frame`` and ``events per frame`` (log1p); ``neighbour
    correlation x / y``; ``consecutive-frame correlation``; ``ON/OFF correlation``.
    """
    n = len(frames)
    f = frames.astype(np.float64)
    c = np.clip(frames, 0, HIST_MAX).astype(np.int64)
    hist = np.stack([(c == k).sum((3, 4)) for k in range(1, HIST_MAX + 1)], -1).astype(np.float64)
    active = hist.sum(-1, keepdims=True)
    return {
        "count histogram per frame": (hist / np.maximum(active, 1)).reshape(n, -1),
        "count histogram pooled": (hist.sum(1) / np.maximum(active.sum(1), 1)).reshape(n, -1),
        "active pixels per frame": np.log1p(active).reshape(n, -1),
        "events per frame": np.log1p(f.sum((3, 4))).reshape(n, -1),
        "neighbour correlation x": _corr(f[..., :, 1:], f[..., :, :-1]).reshape(n, -1),
        "neighbour correlation y": _corr(f[..., 1:, :], f[..., :-1, :]).reshape(n, -1),
        "consecutive-frame correlation": _corr(f[:, 1:], f[:, :-1]).reshape(n, -1),
        "ON/OFF correlation": _corr(f[:, :, 0], f[:, :, 1]).reshape(n, -1),
    }


def recording_views(recs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`frame_views` of recordings, binned at T = 10 as the classifier bins them."""
    from benchmarks._s2r_stats import frames

    return frame_views(frames(recs, 10))


def view_accuracies(real_views: dict[str, np.ndarray], gen: list[np.ndarray], fit: np.ndarray,
                    held: np.ndarray) -> dict[str, float]:
    """``{view: held-out accuracy}`` of a logistic regression real vs generated per view
    (``real_views``: :func:`recording_views` of the real recordings, pair by pair with ``gen``)."""
    from benchmarks._s2r_measure import _logreg_accuracy

    gen_views = recording_views(gen)
    return {name: _logreg_accuracy(real_views[name], gen_views[name], fit, held) for name in real_views}


def permute_pixels(counts: np.ndarray, expected: np.ndarray, group_size: int, seed: int,
                   min_expected: float = 0.5) -> np.ndarray:
    """``counts`` ``[2, T, 34, 34]`` with the active pixels' frame-count vectors permuted.

    Per polarity, the pixels whose ``expected`` ``[2, T, 34, 34]`` events sum to at least
    ``min_expected`` are clustered by their expected profile (k-means on ``sqrt(expected)``,
    about ``group_size`` pixels a cluster) and their ``[T]`` count vectors shuffled inside each
    cluster; the other pixels keep theirs. A permutation: every frame keeps its counts' multiset.
    """
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    n_frames = counts.shape[1]
    out = counts.copy()
    for p in range(2):
        profile = np.sqrt(expected[p].reshape(n_frames, -1).T)  # [pixels, T]
        active = np.flatnonzero(expected[p].sum(0).ravel() >= min_expected)
        if active.size < 2:
            continue
        k = max(active.size // group_size, 1)
        label = KMeans(k, n_init=1, random_state=seed).fit_predict(profile[active])
        src, dst = counts[p].reshape(n_frames, -1), out[p].reshape(n_frames, -1)
        for g in range(k):
            members = active[label == g]
            dst[:, members] = src[:, rng.permutation(members)]
    return out


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks import _frame_counts as fc
    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks.fit_learned_dvs import normalized_counts

    t_start = time.perf_counter()
    study = load_study(study_parser(__doc__, "frame-count model epochs over the fit half"), argv)
    args, model, rates, real, rng = study.args, study.model, study.rates, study.real, study.rng
    fit, held = study.fit, study.held

    real_views = recording_views(real)

    def arm(gen: list[np.ndarray]) -> dict:
        """Views and C2ST of one set of recordings against the real ones."""
        acc = study.c2st(gen)
        return {"views": view_accuracies(real_views, gen, fit, held), "c2st_per_seed": acc,
                "c2st": float(np.mean(acc))}

    result = {"shipped": arm([model.sample(r, rng) for r in rates])}
    print(f"shipped renderer: C2ST {result['shipped']['c2st']:.3f}")

    log_rates = fc.frame_log_rates(rates)
    counts = np.stack([normalized_counts(r, fc.T) for r in real])
    net = fc.frame_count_net()
    fit_info = fc.fit_frame_counts(net, log_rates[fit], counts[fit], log_rates[held], counts[held],
                                   epochs=args.epochs, seed=args.seed)
    fit_info["held_out_poisson_ce"] = fc.poisson_cross_entropy(log_rates[held], counts[held])
    drawn = fc.sample_frame_counts(net, log_rates, seed=args.seed + 1)
    s = model.sampler
    durations = np.maximum(rng.normal(s.duration_mean_us, s.duration_std_us, len(real)), 1).astype(np.int64)
    gen = fc.counts_to_recordings(drawn, rates, durations, rng)
    result["frame_model"] = {"fit": fit_info, **arm(gen)}
    expected = np.exp(log_rates)
    durations = [int(r["t"][-1]) for r in real]  # the hybrids keep each recording's span
    result["hybrids"] = {}
    for name, size in (("real frame counts", None), ("pixels permuted in groups of 3", 3),
                       ("pixels permuted in groups of 6", 6)):
        c = counts.astype(np.int64)
        if size is not None:
            c = np.stack([permute_pixels(c[i], expected[i], size, seed=args.seed + i) for i in range(len(real))])
        hyb = fc.counts_to_recordings(c, rates, durations, rng)
        result["hybrids"][name] = arm(hyb)
        print(f"hybrid, {name}: C2ST {result['hybrids'][name]['c2st']:.3f}")
    print(f"frame-count model: held-out CE per cell {fit_info['held_out_ce_after']:.4f} "
          f"(Poisson in the shipped rates {fit_info['held_out_poisson_ce']:.4f}); "
          f"C2ST {result['frame_model']['c2st']:.3f}")

    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    arms = {"shipped": result["shipped"], "frame model": result["frame_model"],
            "real counts": result["hybrids"]["real frame counts"],
            "permuted 3": result["hybrids"]["pixels permuted in groups of 3"],
            "permuted 6": result["hybrids"]["pixels permuted in groups of 6"]}
    print(f"\n{'held-out accuracy, real vs':30s}" + "".join(f"{a:>13s}" for a in arms))
    for view in result["shipped"]["views"]:
        print(f"{view:30s}" + "".join(f"{arm['views'][view]:13.3f}" for arm in arms.values()))
    print(f"{'C2ST (CNN, T = 3, 5, 10)':30s}" + "".join(f"{arm['c2st']:13.3f}" for arm in arms.values()))
    write_result(study, "c2st_frames", result)
    return result


if __name__ == "__main__":
    main()
