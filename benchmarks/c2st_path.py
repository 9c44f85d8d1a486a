"""Does each recording follow its own saccade path? And does drawing one make the C2ST pass?

The residual study (``c2st_residuals.py``) found that a real recording departs from the rate
CNN's mean in patches, with ON and OFF competing within a bin. One physical cause: the pan-tilt
unit does not trace exactly the same path every time. This study gives each recording a
displacement per bin of its normalized time (``benchmarks/_path_latent.py``: the CNN's log-rate
map of that bin moved by ``(dy, dx)`` px, bicubic, before the sensor's patterns) and asks:

1. **Evidence.** Fitted per recording (MAP, a Gaussian prior of sd 0.3 px and 0.1 px per bin) with
   the shipped CNN, on the held-out real recordings and, as the null, on one draw of the shipped
   renderer for the same images (whose draws have no path of their own): the gain in log
   likelihood per recording, the displacement's sd per bin and its correlation from one bin to
   the next (a path is smooth; noise is not).
2. **A path-conditioned CNN.** The CNN and sensor arrays refitted on the fit half with each
   recording's fitted path (alternating, ``--rounds`` of ``--epochs``); held-out NLL per cell
   without a path, with each held-out recording's own fitted path (and the same gain on the null
   draws), and the residual correlations of ``c2st_residuals`` about both.
3. **Drawing paths.** Recordings drawn with the shipped sampler from the path-conditioned rates,
   each along a path drawn from a Gaussian fitted to the fit half's paths; with and without a
   correction that brings the marginal (path-averaged) rates back to the fit half's mean time
   profile and count image; the C2ST (``--c2st-seeds``) and its count-image and time-profile views.

Writes ``benchmarks/results/c2st_path.json`` and prints a table.

    python benchmarks/c2st_path.py            # ~10 min on 2 cores
    python benchmarks/c2st_path.py --smoke --out /tmp/path
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The C2ST views reported per arm.
VIEWS = ("count_image", "time_profile_T30")
#: (name, path: None / "zero" / "drawn", marginal correction, sampler without gains and bursts)
ARMS = (
    ("shipped renderer", None, False, False),
    ("path CNN, no path (D = 0)", "zero", False, False),
    ("path CNN, drawn path", "drawn", False, False),
    ("path CNN, drawn path, marginal corrected", "drawn", True, False),
    ("path CNN, drawn path, corrected, no gains or bursts", "drawn", True, True),
)


def path_evidence(displacement: np.ndarray, gain: np.ndarray) -> dict:
    """Summary of fitted paths ``[N, n_bins, 2]`` and their likelihood gains ``[N]``: the mean
    gain, the sd per bin (``dy``, ``dx``) and the correlation of bin ``k`` with ``k + 1``."""
    out: dict = {"gain_nats_per_recording": float(gain.mean())}
    for axis, name in ((0, "dy"), (1, "dx")):
        d = displacement[..., axis]
        corr = [float(np.corrcoef(d[:, k], d[:, k + 1])[0, 1]) for k in range(d.shape[1] - 1)]
        out[name] = {"sd_px_by_bin": d.std(0).round(4).tolist(), "next_bin_correlation": corr,
                     "mean_next_bin_correlation": float(np.nanmean(corr)), "max_sd_px": float(d.std(0).max())}
    return out


#: Sampler fields that leave out the rate field and the bursts (with the time gain off:
#: regular renewal draws only).
PLAIN = {"field_sigma": 0.0, "gain_sigma": 0.0, "burst_size": 1.0}


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks._path_latent import (PathDistribution, fit_displacements, fit_jointly,
                                         marginal_correction, mean_nll, path_rates_net, rates_along)
    from benchmarks.c2st_residuals import arm_renderer, residual_stats
    from benchmarks.fit_learned_dvs import normalized_counts

    ap = study_parser(__doc__, "unused here")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the joint fit (paths, then CNN)")
    ap.add_argument("--fit-epochs", type=int, default=10, help="CNN epochs per round")
    t_start = time.perf_counter()
    study = load_study(ap, argv)
    args, fit, held, images = study.args, study.fit, study.held, study.images
    if args.smoke:
        args.rounds, args.fit_epochs = 1, 1
    model = study.model
    nb = model.n_bins
    counts = np.stack([normalized_counts(r, nb) for r in study.real])
    rng = np.random.default_rng(args.seed)
    shipped_draws = [model.sample(r, rng) for r in study.rates]
    null_counts = np.stack([normalized_counts(shipped_draws[i], nb) for i in held])

    def log(msg: str) -> None:
        print(f"{msg}  ({time.perf_counter() - t_start:.0f} s)", flush=True)

    shipped_net = path_rates_net(model)
    d_real, g_real = fit_displacements(shipped_net, images[held], counts[held])
    d_null, g_null = fit_displacements(shipped_net, images[held], null_counts)
    result: dict = {"n_bins": nb, "model": str(model.path), "arms": {},
                    "evidence": {"real": path_evidence(d_real, g_real), "null": path_evidence(d_null, g_null)}}
    for side in ("real", "null"):
        e = result["evidence"][side]
        log(f"  paths of the held-out {side:4s}: gain {e['gain_nats_per_recording']:6.1f} nats/recording, "
            f"max sd dy {e['dy']['max_sd_px']:.2f} px dx {e['dx']['max_sd_px']:.2f} px, next-bin "
            f"correlation dy {e['dy']['mean_next_bin_correlation']:+.2f} dx {e['dx']['mean_next_bin_correlation']:+.2f}")

    net = path_rates_net(model)
    d_fit = fit_jointly(net, images[fit], counts[fit], rounds=args.rounds, epochs=args.fit_epochs,
                        seed=args.seed, log=log)
    zero = np.zeros((len(held), nb, 2), np.float32)
    d_held, g_held = fit_displacements(net, images[held], counts[held])
    _d, g_held_null = fit_displacements(net, images[held], null_counts)
    cond = rates_along(net, images[held], d_held)
    result["nll_held_out_per_cell"] = {
        "shipped": mean_nll(shipped_net, images[held], counts[held], zero),
        "path_cnn_no_path": mean_nll(net, images[held], counts[held], zero),
        "path_cnn_own_path": mean_nll(net, images[held], counts[held], d_held),
        "own_path_gain_nats_real": float(g_held.mean()), "own_path_gain_nats_null": float(g_held_null.mean())}
    result["residuals"] = {"about_shipped_rates": residual_stats(counts[held].astype(np.float64), study.rates[held]),
                           "about_own_path_rates": residual_stats(counts[held].astype(np.float64), cond)}
    n = result["nll_held_out_per_cell"]
    log(f"  held-out NLL per cell: shipped {n['shipped']:.5f}, path CNN without a path "
        f"{n['path_cnn_no_path']:.5f}, along each recording's own path {n['path_cnn_own_path']:.5f}")
    for name, r in result["residuals"].items():
        print(f"  residuals {name:22s} " + " ".join(f"{k} {v:+.3f}" for k, v in r.items()))

    paths = PathDistribution.of(d_fit)
    drawn = paths.sample(len(images), np.random.default_rng(args.seed + 1))
    path_model = model.with_arrays(net.numpy_arrays())
    marginal = np.mean([rates_along(net, images[fit], paths.sample(len(fit), np.random.default_rng(100 + s)))
                        for s in range(2 if args.smoke else 4)], axis=0)
    correction = marginal_correction(counts[fit].astype(np.float64), marginal)
    result["correction_log_sd"] = float(np.log(correction).std())
    for name, path, corrected, plain in ARMS:
        if path is None:
            renderer, rates = model, study.rates
        else:
            renderer = arm_renderer(path_model, PLAIN, None, time_gain=False) if plain else path_model
            rates = rates_along(net, images, drawn if path == "drawn" else np.zeros_like(drawn))
            if corrected:
                rates = rates * correction
        rng = np.random.default_rng(args.seed)
        gen = shipped_draws if path is None else [renderer.sample(r, rng) for r in rates]
        acc = study.c2st(gen)
        views = study.views(gen, VIEWS)
        result["arms"][name] = {"c2st": float(np.mean(acc)), "c2st_per_seed": acc, "views": views}
        log(f"  {name:52s} C2ST {np.mean(acc):.3f}  " + "  ".join(f"{k} {views[k]:.2f}" for k in VIEWS))
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_path", result)
    return result


if __name__ == "__main__":
    main()
