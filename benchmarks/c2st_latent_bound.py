"""How far could a per-recording latent take the C2ST, if each recording's were known exactly?

Every latent study so far drew its latent from a fitted distribution (``c2st_path.py``: paths)
and asked whether the draws pass. This study asks the question that bounds them all: give each
generated recording its *paired real recording's own* latent, fitted to that recording, and
draw it with the shipped sampler from the shipped CNN's rates along it. No distribution over
latents can do better than the latents themselves (up to the few nats a MAP fit takes from the
recording's own noise, reported as the gain on draws that have no latent).

The latents (``benchmarks/_recording_latent.py``), nested:

* ``path``: the saccade path's displacement per bin;
* ``+ registration``: the image's scale and position on the sensor;
* ``+ gain``: a log gain per polarity and bin;
* ``+ field``: a smooth deformation per saccade (5 x 5 knots).

For each: the gain in log likelihood per recording (fit half, held-out half, and the null: one
draw of the shipped renderer per held-out image), the correlation of the rates with the real
counts (raw, and blurred by 0.5 bin and 0.5 px: the shipped CNN's rates match the blurred
counts best), and the C2ST (``--c2st-seeds``) with its count-image and time-profile views. The
same run also draws the real recordings' own counts with the exact sampler of
``c2st_oracle.py``, the end of the scale where the C2ST passes.

Writes ``benchmarks/results/c2st_latent_bound.json`` and prints a table.

    python benchmarks/c2st_latent_bound.py            # ~25 min on 2 cores
    python benchmarks/c2st_latent_bound.py --smoke --out /tmp/bound
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
#: (arm name, latent kinds), nested.
FAMILIES = (
    ("own path", ("path",)),
    ("own path + registration", ("path", "registration")),
    ("own path + registration + gain", ("path", "registration", "gain")),
    ("own path + registration + gain + field", ("path", "registration", "gain", "field")),
)
#: (time blur in bins, space blur in px) of the correlations reported.
BLURS = ((0.0, 0.0), (0.5, 0.5))


def latent_summary(latent: dict[str, np.ndarray], kinds: tuple[str, ...]) -> dict:
    """Mean and sd over recordings of each fitted latent's entries (flattened per kind: path and
    gain averaged over bins first; the first 8 entries, enough for the registration's 4), and
    ``sd_overall``, the sd averaged over all entries."""
    out = {}
    for k in kinds:
        v = latent[k]
        if k in ("path", "gain"):
            v = v.mean(1 if k == "path" else 2)
        v = v.reshape(len(v), -1)
        out[k] = {"mean": v.mean(0).round(4).tolist()[:8], "sd": v.std(0).round(4).tolist()[:8],
                  "sd_overall": float(v.std(0).mean())}
    return out


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance
    from flexsnn.progress import cli_progress

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks._path_latent import path_rates_net
    from benchmarks._recording_latent import fit_latents, rates_given
    from benchmarks.c2st_oracle import N_BINS, blur_correlations, draw_all, oracle_rates, oracle_sampler

    ap = study_parser(__doc__, "unused here")
    ap.add_argument("--steps", type=int, default=60, help="Adam steps of each recording's MAP fit")
    ap.add_argument("--null-n", type=int, default=200,
                    help="held-out images whose shipped draw is fitted as the null (0: none)")
    t_start = time.perf_counter()
    study = load_study(ap, argv)
    args, held, images = study.args, study.held, study.images
    if args.smoke:
        args.steps = 3
    model = study.model
    nb = model.n_bins
    if nb != N_BINS:
        ap.error(f"--model {args.model} has {nb} time bins; this study compares its rates with real "
                 f"counts in {N_BINS} bins (c2st_oracle.N_BINS): use a renderer fitted with --bins {N_BINS}")
    counts = oracle_rates(study.real)  # [N, 2, N_BINS, 34, 34] float64: fitted, correlated, drawn
    rng = np.random.default_rng(args.seed)
    shipped_draws = [model.sample(r, rng) for r in study.rates]
    null_idx = held[:args.null_n]
    null_counts = oracle_rates([shipped_draws[i] for i in null_idx]) if len(null_idx) else None

    def log(msg: str) -> None:
        print(f"{msg}  ({time.perf_counter() - t_start:.0f} s)", flush=True)

    result: dict = {"n_bins": nb, "model": str(model.path), "steps": args.steps, "arms": {},
                    "events_per_real_recording": float(np.mean([len(r) for r in study.real]))}

    def arm(name: str, gen: list[np.ndarray], extra: dict | None = None) -> None:
        acc = study.c2st(gen)
        views = study.views(gen, VIEWS)
        result["arms"][name] = {"c2st": float(np.mean(acc)), "c2st_per_seed": acc, "views": views,
                                "events_per_recording": float(np.mean([len(g) for g in gen])), **(extra or {})}
        log(f"  {name:44s} C2ST {np.mean(acc):.3f}  " + "  ".join(f"{k} {views[k]:.2f}" for k in VIEWS))

    def correlations(rates: np.ndarray) -> dict[str, float]:
        return {f"blur {b['time_blur_bins']} bin {b['space_blur_px']} px": b["correlation"]
                for b in blur_correlations(counts[held], rates[held], BLURS)}

    arm("shipped renderer", shipped_draws, {"correlation_with_real": correlations(study.rates)})
    net = path_rates_net(model)
    for name, kinds in FAMILIES:
        bar = cli_progress(total=len(images), desc=f"fitting {name}")
        latent, gain = fit_latents(net, images, counts, kinds, steps=args.steps, progress=bar.update)
        bar.close()
        evidence = {"gain_nats_fit": float(gain[study.fit].mean()), "gain_nats_held_out": float(gain[held].mean())}
        if null_counts is not None:
            _lat, null_gain = fit_latents(net, images[null_idx], null_counts, kinds, steps=args.steps)
            evidence["gain_nats_null"] = float(null_gain.mean())
        log(f"{name}: gain per recording {evidence['gain_nats_fit']:.1f} fit half, "
            f"{evidence['gain_nats_held_out']:.1f} held out, {evidence.get('gain_nats_null', float('nan')):.1f} null")
        rates = rates_given(net, images, latent, kinds)
        rng = np.random.default_rng(args.seed)
        arm(name, [model.sample(r, rng) for r in rates],
            {"evidence": evidence, "latent": latent_summary(latent, kinds),
             "correlation_with_real": correlations(rates)})
    rng = np.random.default_rng(args.seed)
    arm("oracle: each real recording's own counts, drawn exactly",
        draw_all(oracle_sampler(model, "exact"), counts, rng))
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_latent_bound", result)
    print(f"\n{'arm':58s} {'C2ST':>6s} {'count img':>9s} {'time prof':>9s} {'gain held':>9s} {'null':>6s} {'corr':>6s}")
    for name, a in result["arms"].items():
        e = a.get("evidence", {})
        corr = a.get("correlation_with_real", {}).get("blur 0.0 bin 0.0 px", float("nan"))
        print(f"{name:58s} {a['c2st']:6.3f} {a['views']['count_image']:9.2f} {a['views']['time_profile_T30']:9.2f} "
              f"{e.get('gain_nats_held_out', float('nan')):9.1f} {e.get('gain_nats_null', float('nan')):6.1f} {corr:6.3f}")
    return result


if __name__ == "__main__":
    main()
