"""Does the DVS's own form, a moving intensity map read through level crossings, pass the C2ST?

Every renderer tried so far draws events from expected rates with a few shared latents, and the
C2ST stays near 0.85. A real recording is one sharp instance: an edge fires in neighbouring
pixels at once, ON and OFF compete where it passes, and a pixel's count follows the edge's
contrast. This study fits a renderer that has that form (``benchmarks/_integrator.py``: a learned
log-intensity map moved along a learned saccade path, each pixel's rise and fall divided by its
threshold, plus each recording's own path deviation from ``benchmarks/_path_latent.py``) on the
fit half of the pairs, and asks:

1. **Its fit.** Held-out NLL per cell against the shipped renderer's, along the mean path and
   along each held-out recording's own fitted path.
2. **Its structure.** The residual statistics of ``c2st_residuals.py`` (neighbour correlations of
   a recording's counts about its renderer's mean) of its draws, against the real recordings'.
3. **The C2ST** (``--c2st-seeds``) and the count-image and time-profile views of:
   the integrator along the mean path, along drawn paths (sd x1 and ``--wide``), with renewal
   shape 11 instead of level crossings; and hybrids that keep the shipped renderer's expected
   events per bin (and its per-recording field and time gain) but place them as the integrator
   does (each recording's step rates scaled, bin by bin and pixel by pixel, by the shipped mean
   over the integrator's path-averaged mean, within x4).

Writes ``benchmarks/results/c2st_integrator.json`` and prints a table.

    python benchmarks/c2st_integrator.py            # ~21 min on 2 cores
    python benchmarks/c2st_integrator.py --smoke --out /tmp/integrator
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEWS = ("count_image", "time_profile_T30")
#: (name, renderer, path sd factor (0: the mean path), shape, the shipped sampler's per-recording
#: field and time gain). Renderers: ``shipped``; ``integrator`` (``gains``: also brought to the
#: fit half's time profile); ``hybrid`` (the shipped mean per cell, :func:`cell_factors`);
#: ``hybrid_pixel`` (per pixel, both polarities together, :func:`pixel_factors`).
ARMS = (
    ("shipped renderer", "shipped", None, None, True),
    ("integrator, mean path", "integrator", 0.0, np.inf, False),
    ("integrator, drawn paths", "integrator", 1.0, np.inf, False),
    ("integrator, drawn paths x wide", "integrator", "wide", np.inf, False),
    ("integrator, drawn paths, renewal shape 11", "integrator", 1.0, 11.0, False),
    ("integrator, drawn paths, real time profile, field and time gain", "integrator", 1.0, np.inf, True),
    ("hybrid: shipped mean per cell, integrator's placement", "hybrid", 1.0, np.inf, True),
    ("hybrid per cell, paths x wide", "hybrid", "wide", np.inf, True),
    ("hybrid: shipped mean per pixel, integrator's ON/OFF and timing", "hybrid_pixel", 1.0, np.inf, True),
)
#: Drawn paths averaged for the integrator's mean rates.
N_MEAN_PATHS = 4
#: The hybrids' factors stay within [1 / RATIO_LIMIT, RATIO_LIMIT].
RATIO_LIMIT = 4.0


def cell_factors(target: np.ndarray, mean_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-cell hybrid of one image: the factor ``[2, n_bins, 34, 34]`` on the integrator's
    step rates (``target / mean_signal``, both ``[2, n_bins, 34, 34]``, within ``RATIO_LIMIT``; 0
    where the integrator expects under 1e-3 events) and the leftover bin rates ``target -
    mean_signal * factor`` (>= 0) drawn apart."""
    live = mean_signal > 1e-3
    ratio = np.where(live, np.clip(target / np.maximum(mean_signal, 1e-12), 1 / RATIO_LIMIT, RATIO_LIMIT), 0.0)
    return ratio, np.maximum(target - mean_signal * ratio, 0.0)


def pixel_factors(target: np.ndarray, mean_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel hybrid of one image: one factor per pixel for both polarities and all bins
    (the pixel's target events over the integrator's, within ``RATIO_LIMIT``), so each pixel keeps
    the integrator's ON/OFF balance and timing; pixels where it expects under 0.01 events get 0
    and their target as the leftover. Shapes as :func:`cell_factors`."""
    want, have = target.sum((0, 1)), mean_signal.sum((0, 1))
    live = have > 1e-2
    ratio = np.where(live, np.clip(want / np.maximum(have, 1e-12), 1 / RATIO_LIMIT, RATIO_LIMIT), 0.0)
    return np.broadcast_to(ratio, target.shape), np.where(live, 0.0, target)


def profile_factor(counts: np.ndarray, background: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """``[2, n_bins, 1, 1]`` factor that brings the signal ``rates`` ``[N, 2, n_bins, 34, 34]`` to
    the signal of ``counts`` (same layout; ``background`` ``[2, n_bins, 34, 34]`` taken off) per
    polarity and bin, summed over recordings and pixels."""
    want = counts.sum((0, 3, 4)) - len(counts) * background.sum((2, 3))
    return (np.maximum(want, 0.0) / np.maximum(rates.sum((0, 3, 4)), 1e-12))[..., None, None]


def fit_integrator(study, counts: np.ndarray, args, log):
    """The integrator fitted on the fit half (which polarity a rising trace fires: the better
    of two 5-epoch fits on the held-out NLL), or read from ``--fit-npz`` when that file exists
    (and written there when it does not); returns the net, the fit half's displacements and
    the starting path."""
    import torch

    from benchmarks._integrator import (content_motion, fit_warmup, initial_path, integrator_net,
                                        load_fit, save_fit)
    from benchmarks._path_latent import fit_jointly, mean_nll

    fit, held, images = study.fit, study.held, study.images
    background, nb = study.model.noise_rates(), study.model.n_bins
    path0 = initial_path(content_motion(counts[fit]))
    if args.fit_npz is not None and args.fit_npz.exists():
        try:
            net, d_fit = load_fit(args.fit_npz, background)
        except ValueError as err:
            raise SystemExit(str(err)) from err
        if d_fit.shape[0] != len(fit):
            raise SystemExit(f"{args.fit_npz} was fitted on {d_fit.shape[0]} pairs, this run's fit half "
                             f"has {len(fit)} (--smoke?); delete it to refit, or pass another --fit-npz")
        log(f"  read the fitted integrator from {args.fit_npz}")
        return net, d_fit, path0
    trial = {}
    for rising in (0, 1):
        torch.manual_seed(args.seed)
        net = integrator_net(background, path0, rising)
        fit_warmup(net, images[fit], counts[fit], epochs=min(5, args.epochs), seed=args.seed, log=lambda m: None)
        trial[rising] = (mean_nll(net, images[held], counts[held], np.zeros((len(held), nb, 2), np.float32)), net)
    rising = min(trial, key=lambda r: trial[r][0])
    net = trial[rising][1]
    log(f"  a rising trace fires polarity {rising} (held-out NLL per cell after 5 epochs: "
        f"{trial[0][0]:.5f} for 0, {trial[1][0]:.5f} for 1)")
    fit_warmup(net, images[fit], counts[fit], epochs=max(args.epochs - 5, 1), seed=args.seed, log=log)
    d_fit = fit_jointly(net, images[fit], counts[fit], rounds=args.rounds, epochs=args.fit_epochs,
                        seed=args.seed, path_steps=15, path_lr=0.08, log=log)
    if args.fit_npz is not None:
        save_fit(args.fit_npz, net, d_fit)
    return net, d_fit, path0


def arm_factors(kind: str, gains: bool, target: np.ndarray, mean_signal: np.ndarray,
                real_profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's factor on the integrator's step rates and leftover bin rates (``[N, 2,
    n_bins, 34, 34]`` each) for one arm's ``kind`` (see :data:`ARMS`); ``real_profile`` ``[2,
    n_bins, 1, 1]``: :func:`profile_factor` of the integrator's mean against the fit half."""
    if kind == "integrator":
        factor = np.broadcast_to(real_profile if gains else np.ones_like(real_profile), mean_signal.shape)
        return factor, np.zeros_like(mean_signal)
    split = cell_factors if kind == "hybrid" else pixel_factors
    parts = [split(t, m) for t, m in zip(target, mean_signal)]
    factor, leftover = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    if kind == "hybrid_pixel":  # the per-pixel factor leaves the time profile as the integrator's
        want = target.sum((0, 3, 4)) - leftover.sum((0, 3, 4))
        factor = factor * (want / np.maximum((mean_signal * factor).sum((0, 3, 4)), 1e-12))[..., None, None]
    return factor, leftover


def draw_arm(net, model, images: np.ndarray, paths: np.ndarray | None, factor: np.ndarray,
             leftover: np.ndarray, shape: float, gains: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """One recording per image: the integrator's step rates along ``paths`` (``[N, n_bins, 2]``,
    None: the mean path) times ``factor`` and, with ``gains``, the shipped sampler's field and
    time gain, drawn by :func:`~benchmarks._integrator.draw` with ``leftover`` and the background."""
    from benchmarks._integrator import SUB, draw, step_rates

    s, background = model.sampler, model.noise_rates()
    gen = []
    for i in range(0, len(images), 50):
        steps = step_rates(net, images[i:i + 50], None if paths is None else paths[i:i + 50])
        for j, st in enumerate(steps):
            f, left = factor[i + j], leftover[i + j]
            if gains:
                g = model.field(rng)[None, None] * model.time_gain(rng)
                f, left = f * g, left * g
            gen.append(draw(st * np.repeat(f, SUB, axis=1), background + left, rng, shape=shape,
                            duration_mean_us=s.duration_mean_us, duration_std_us=s.duration_std_us))
    return gen


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks._integrator import SUB, step_rates
    from benchmarks._path_latent import PathDistribution, fit_displacements, mean_nll, path_rates_net
    from benchmarks.c2st_residuals import residual_stats
    from benchmarks.fit_learned_dvs import normalized_counts

    ap = study_parser(__doc__, "warm-up epochs along the mean path")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the joint fit (paths, then the map)")
    ap.add_argument("--fit-epochs", type=int, default=10, help="epochs per round of the joint fit")
    ap.add_argument("--wide", type=float, default=1.5, help="path sd factor of the wide arms")
    ap.add_argument("--fit-npz", type=Path, default=None, metavar="NPZ",
                    help="read the fitted integrator from NPZ if it exists, else fit and write it there "
                         "(to try other arms without refitting)")
    t_start = time.perf_counter()
    study = load_study(ap, argv)
    args, fit, held, images, model = study.args, study.fit, study.held, study.images, study.model
    if args.smoke:
        args.rounds, args.fit_epochs = 1, 1
    nb = model.n_bins
    counts = np.stack([normalized_counts(r, nb) for r in study.real])
    background = model.noise_rates()

    def log(msg: str) -> None:
        print(f"{msg}  ({time.perf_counter() - t_start:.0f} s)", flush=True)

    net, d_fit, path0 = fit_integrator(study, counts, args, log)
    zero = np.zeros((len(held), nb, 2), np.float32)
    d_held, g_held = fit_displacements(net, images[held], counts[held], steps=15, lr=0.08)
    result: dict = {
        "n_bins": nb, "steps_per_bin": SUB, "rising_polarity": net.rising, "model": str(model.path),
        "nll_held_out_per_cell": {
            "shipped": mean_nll(path_rates_net(model), images[held], counts[held], zero),
            "integrator_mean_path": mean_nll(net, images[held], counts[held], zero),
            "integrator_own_path": mean_nll(net, images[held], counts[held], d_held),
            "own_path_gain_nats": float(g_held.mean())},
        "fitted": {"alpha": net.alpha.item(), "offset_px": net.offset.detach().numpy().round(3).tolist(),
                   "path_px": net.path.detach().numpy()[::SUB].round(3).tolist(),
                   "start_path_px": path0[::SUB].round(3).tolist()},
        "arms": {}}
    n = result["nll_held_out_per_cell"]
    log(f"  held-out NLL per cell: shipped {n['shipped']:.5f}, integrator along the mean path "
        f"{n['integrator_mean_path']:.5f}, along each recording's own path {n['integrator_own_path']:.5f}")

    paths = PathDistribution.of(d_fit)
    mean_signal = np.mean([step_rates(net, images, paths.sample(len(images), np.random.default_rng(100 + k)),
                                      per_bin=True) for k in range(N_MEAN_PATHS)], axis=0)
    real_profile = profile_factor(counts[fit].astype(np.float64), background, mean_signal[fit])
    result["real_residuals"] = residual_stats(counts[held].astype(np.float64), study.rates[held])
    target = np.maximum(study.rates - background[None], 0.0)
    real = study.real
    for name, kind, scale, shape, gains in ARMS:
        rng = np.random.default_rng(args.seed)
        if kind == "shipped":
            gen, mean = [model.sample(r, rng) for r in study.rates], study.rates[held]
        else:
            factor = args.wide if scale == "wide" else scale
            drawn = paths.sample(len(images), np.random.default_rng(args.seed + 1), factor) if factor else None
            f, left = arm_factors(kind, gains, target, mean_signal, real_profile)
            gen = draw_arm(net, model, images, drawn, f, left, shape, gains, rng)
            # the draws' expectation: over drawn paths, the path-averaged rates; on the mean path, its own
            along = mean_signal[held] if drawn is not None else step_rates(net, images[held], None, per_bin=True)
            mean = along * f[held] + left[held] + background[None]
        drawn_counts = np.stack([normalized_counts(gen[i], nb) for i in held]).astype(np.float64)
        acc = study.c2st(gen)
        views = study.views(gen, VIEWS)
        result["arms"][name] = {"c2st": float(np.mean(acc)), "c2st_per_seed": acc, "views": views,
                                "events_per_recording": float(np.mean([len(g) for g in gen])),
                                "residuals": residual_stats(drawn_counts, mean)}
        log(f"  {name:64s} C2ST {np.mean(acc):.3f}  " + "  ".join(f"{k} {views[k]:.2f}" for k in VIEWS))
    print("residuals (about each renderer's mean; real: about the shipped renderer's)")
    rows = {"real": result["real_residuals"]} | {k: v["residuals"] for k, v in result["arms"].items()}
    for name, r in rows.items():
        print(f"  {name:64s} " + " ".join(f"{k} {v:+.2f}" for k, v in r.items()))
    result |= {"events_per_real_recording": float(np.mean([len(r) for r in real])),
               **study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_integrator", result)
    return result


if __name__ == "__main__":
    main()
