"""Would more paired recordings make the learned renderer pass the C2ST? Its learning curve.

The learned renderer is fitted on the fit half of nmnist-small's pairs (503 recordings). This
study refits it (``benchmarks/fit_learned_dvs.py --fit-pairs N``, the same recipe with
``--epochs`` scaled so that the rate CNN takes as many steps as on all pairs) on fewer pairs and
measures each fit as ``sim_to_real`` does: the held-out NLL per cell and the C2ST, whose
classifier always trains on the whole fit half and is tested on the held-out half (two draws of
the renderer, ``--c2st-seeds`` classifier seeds each). The shipped model is the point at all
pairs. If the C2ST falls steeply with N, the renderer is short of data; if it barely moves, the
model is what has to change.

Writes ``benchmarks/results/c2st_data.json`` (``points``: per N the fit's held-out NLL and C2STs)
and prints a table.

    python benchmarks/c2st_data.py                 # ~35 min on 2 cores (two refits)
    python benchmarks/c2st_data.py --pairs 250     # one refit, ~15 min
    python benchmarks/c2st_data.py --smoke --out /tmp/data
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Rate-CNN epochs of the shipped fit on all 503 fit pairs; fewer pairs get proportionally more.
BASE_EPOCHS, BASE_PAIRS = 200, 503
DRAWS = (1, 2)


def scaled_epochs(n_pairs: int, base_epochs: int = BASE_EPOCHS, base_pairs: int = BASE_PAIRS) -> int:
    """Epochs that give ``n_pairs`` the rate-CNN steps that ``base_pairs`` get in ``base_epochs``."""
    return max(1, round(base_epochs * base_pairs / n_pairs))


def measure(study, model, held_counts: np.ndarray) -> tuple[float, list[float]]:
    """``model``'s mean Poisson negative log likelihood (without ``log y!``) per cell of the
    held-out real recordings' counts ``held_counts`` ``[n_held, 2, n_bins, 34, 34]``, and the C2ST
    of its draws (one per seed of :data:`DRAWS`, the mean over classifier seeds)."""
    rates = model.rates(study.images)
    held = rates[study.held]
    nll = float((held - held_counts * np.log(held)).mean())
    c2st = []
    for draw in DRAWS:
        rng = np.random.default_rng(draw)
        c2st.append(float(np.mean(study.c2st([model.sample(r, rng) for r in rates]))))
    return nll, c2st


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.data.learned_dvs import LearnedDVS
    from flexsnn.io_utils import provenance

    from benchmarks import fit_learned_dvs
    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks.fit_learned_dvs import normalized_counts

    ap = study_parser(__doc__, "unused here")
    ap.add_argument("--pairs", default="125,250", help="fit-pair counts to refit on, comma-separated")
    t_start = time.perf_counter()
    study = load_study(ap, argv)
    args = study.args
    sizes = [30, 60] if args.smoke else [int(n) for n in args.pairs.split(",")]
    shipped = study.model
    held_counts = np.stack([normalized_counts(study.real[i], shipped.n_bins) for i in study.held])
    nll, c2st = measure(study, shipped, held_counts)
    points = [{"fit_pairs": int(shipped.meta.get("fit_pairs", BASE_PAIRS)), "model": "shipped",
               "nll_held_out_per_cell": nll, "c2st_per_draw": c2st}]
    print(f"  shipped ({points[0]['fit_pairs']} pairs): C2ST {np.mean(points[0]['c2st_per_draw']):.3f}  "
          f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            npz, js = Path(tmp) / f"n{n}.npz", Path(tmp) / f"n{n}.json"
            fit_args = ["--real", str(args.real), "--fit-pairs", str(n), "--seed", str(args.seed),
                        "--out", str(npz), "--json", str(js)]
            fit_args += ["--smoke"] if args.smoke else ["--epochs", str(scaled_epochs(n))]
            report = fit_learned_dvs.main(fit_args)
            nll, c2st = measure(study, LearnedDVS(npz), held_counts)
            points.append({"fit_pairs": n, "model": f"refit on {n} pairs",
                           "epochs": report["settings"]["epochs"], "nll_held_out_per_cell": nll,
                           "fit_report_c2st": report["c2st_accuracy"], "c2st_per_draw": c2st})
            print(f"  {n} pairs: held-out NLL {nll:.5f}, C2ST {np.mean(points[-1]['c2st_per_draw']):.3f}  "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    for p in points:
        p["c2st"] = float(np.mean(p["c2st_per_draw"]))
    print(f"  {'fit pairs':>9s}  {'held-out NLL':>12s}  C2ST (draws)")
    for p in sorted(points, key=lambda p: p["fit_pairs"]):
        print(f"  {p['fit_pairs']:9d}  {p['nll_held_out_per_cell']:12.5f}  {p['c2st']:.3f} ({', '.join(f'{c:.3f}' for c in p['c2st_per_draw'])})")
    result = {"points": points, "draws": list(DRAWS),
              **study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_data", result)
    return result


if __name__ == "__main__":
    main()
