"""Why a classifier tells real N-MNIST from generated saccade-mnist, and what each generator
change does to it (issue 16's C2ST target: held-out accuracy <= 0.65).

1. Diagnosis (``benchmarks/_s2r_measure.py``, ``paired_diagnosis``): the default generator's
   recordings of the 1,000 nmnist-small images against the real ones, pair by pair: noise
   polarity, per-pixel count histograms, per-recording gain and saccade timing spread, ON
   share per time bin, and logistic-regression C2STs on single features.
2. Measured settings (fit half only): noise polarity and rate, per-pixel noise and threshold maps,
   per-recording gain, saccade time warp and recording end, tremor amplitude (matched to the
   events in the pause between saccades 1 and 2), and a refit of the digit's appearance
   (scale, display gamma, blur, black level, thresholds, placement) on the per-pixel count
   histogram, active pixels, event count and paired count images.
3. Attempts: each change added to the previous one; for each, the single-statistic C2STs
   (``_s2r_c2st.c2st_views``) and the full C2ST (the CNN of ``sim_to_real.py``), trained on
   the fit half and tested on the held-out half.

Writes ``benchmarks/results/c2st_attempts.json``. With ``--controls`` it instead asks how
far below 1.0 the C2ST can go at all: generated vs generated recordings of the same images,
differing only in the generator seed (the sensor's threshold-mismatch pattern and the
per-recording draws), with v4's mismatch and without it
(``benchmarks/results/c2st_controls.json``).

Usage::

    python benchmarks/c2st_attempts.py                  # ~20 min on a busy 2-core machine
    python benchmarks/c2st_attempts.py --smoke --out /tmp/c2st
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._s2r_data import DEFAULT_REAL, REPO, Pairs  # noqa: E402

#: tremor amplitudes (px) tried; the one whose pause events match the real ones is kept
TREMOR_GRID = (0.0, 0.05, 0.1, 0.15, 0.2)
PAUSE_US = (90_000.0, 100_000.0)
#: appearance parameters refitted in step "refit" (name, step of one optimizer unit)
SHAPE_COORDS = (("digit_scale", 0.02), ("display_gamma", 0.4), ("blur_sigma_px", 0.15),
                ("background", 0.05), ("threshold_scale", 0.05), ("offset_x_px", 0.3),
                ("offset_y_px", 0.3))


def _generate(params: dict, pairs: Pairs, positions: np.ndarray) -> list[np.ndarray]:
    from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images

    images, _ = load_mnist_images()
    gen = SaccadeGenerator(SaccadeParams(**params), seed=0)
    return [gen.generate(images[pairs.image_index[i]], int(pairs.image_index[i])) for i in positions]


def _pause_events(recs: list[np.ndarray]) -> float:
    lo, hi = PAUSE_US
    return float(np.mean([((r["t"] >= lo) & (r["t"] < hi)).sum() for r in recs]))


def _background_events(recs: list[np.ndarray], footprint: np.ndarray) -> float:
    from benchmarks._s2r_measure import count_images

    c = count_images(recs).sum(1)
    return float((c * ~footprint).sum((1, 2)).mean())


def _with_threshold_scale(values: dict, base: dict) -> dict:
    from flexsnn.data.saccade import SaccadeParams

    v = dict(values)
    s = v.pop("threshold_scale", 1.0)
    d = SaccadeParams(**base)
    v["blur_sigma_px"] = max(v.get("blur_sigma_px", d.blur_sigma_px), 0.0)
    v["background"] = min(max(v.get("background", d.background), 0.02), 0.9)
    return {**base, **v, "threshold_on": d.threshold_on * s, "threshold_off": d.threshold_off * s}


def refit_shape(base: dict, pairs: Pairs, positions: np.ndarray, *, evals: int, log=print) -> dict:
    """Powell's method over :data:`SHAPE_COORDS` on the fit-half ``positions``: minimise the L1
    distance of the per-polarity pixel-count histograms + |log active-pixel ratio| + squared
    log event-count ratio + 2 (1 - mean paired correlation of the log1p count images)."""
    from scipy.optimize import minimize

    from benchmarks._s2r_measure import count_images, pixel_count_hist
    from flexsnn.data.saccade import SaccadeParams

    real = [pairs.real[i] for i in positions]
    cr = count_images(real)
    hr = pixel_count_hist(cr).mean(0)
    act_r, n_r = (cr.sum(1) > 0).sum((1, 2)).mean(), cr.sum((1, 2, 3)).mean()
    d = dataclasses.asdict(SaccadeParams(**base))
    x0 = np.array([d.get(n, 1.0) for n, _s in SHAPE_COORDS])
    steps = np.array([s for _n, s in SHAPE_COORDS])
    best = {"f": np.inf, "values": None}

    def objective(u: np.ndarray) -> float:
        values = {n: float(v) for (n, _s), v in zip(SHAPE_COORDS, x0 + u * steps)}
        try:
            params = _with_threshold_scale(values, base)
            SaccadeParams(**params)
        except Exception:  # outside the valid range: a wall
            return 10.0
        cg = count_images(_generate(params, pairs, positions))
        l1 = np.abs(pixel_count_hist(cg).mean(0) - hr).sum() / hr.sum()
        act = abs(np.log((cg.sum(1) > 0).sum((1, 2)).mean() / act_r))
        cnt = np.log(cg.sum((1, 2, 3)).mean() / n_r) ** 2
        a = np.log1p(cr).reshape(2 * len(real), -1)
        b = np.log1p(cg).reshape(2 * len(real), -1)
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        corr = float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)).mean())
        f = float(l1 + act + cnt + 2 * (1 - corr))
        if f < best["f"]:
            best.update(f=f, values=values, parts={"pixel_hist_l1": float(l1), "active_log_ratio": float(act),
                                                   "count_log_ratio_sq": float(cnt), "count_image_corr": corr})
            log(f"refit: {f:.4f} {values}")
        return f

    minimize(objective, np.zeros(len(SHAPE_COORDS)), method="Powell",
             options={"maxfev": evals, "xtol": 0.1, "ftol": 1e-3, "direc": np.eye(len(SHAPE_COORDS))})
    return {"values": {k: round(v, 5) for k, v in best["values"].items()}, "objective": best["f"],
            "parts": best["parts"]}


def measured_steps(pairs: Pairs, *, refit_evals: int, log=print) -> tuple[list[tuple[str, dict]], dict]:
    """The cumulative generator variants (name, SaccadeParams overrides), each measured on the
    fit half, and the measurements."""
    from scipy.ndimage import binary_dilation

    from benchmarks._s2r_measure import (count_images, measure_end, measure_gain, measure_noise,
                                         measure_noise_map, measure_threshold_map, measure_timing)
    from flexsnn.data.saccade import SaccadeParams

    fit = pairs.half(held_out=False)
    real_fit = [pairs.real[i] for i in fit]
    v4 = _generate({}, pairs, fit)
    cr, cg = count_images(real_fit).sum(1), count_images(v4).sum(1)
    footprint = np.array([binary_dilation((a + b) >= 3, iterations=2) for a, b in zip(cr, cg)])
    m: dict = {}
    share = measure_noise(real_fit)
    d = SaccadeParams()
    noise_hz = d.noise_hz * _background_events(real_fit, footprint) / _background_events(v4, footprint)
    # the generator draws the noise's polarity before invert_polarity flips it
    m["noise"] = {"isolated_p1_share_real": share, "on_ratio_noise": round(1 - share if d.invert_polarity else share, 4),
                  "noise_hz": round(noise_hz, 4)}
    steps: list[tuple[str, dict]] = [("v4 (default)", {})]
    cur = {"on_ratio_noise": m["noise"]["on_ratio_noise"], "noise_hz": m["noise"]["noise_hz"]}
    steps.append(("+ noise polarity and rate", dict(cur)))
    nmap = measure_noise_map(real_fit, d.hot_pixels)
    m["noise_map_cv"] = float(nmap.std())
    cur["noise_map"] = tuple(round(float(v), 4) for v in nmap)
    steps.append(("+ sensor noise map", dict(cur)))
    log("measuring the threshold map")
    tmap = measure_threshold_map(real_fit, lambda tm: _generate({**cur, "threshold_sigma": 0.0,
                                                                 "threshold_map": tm}, pairs, fit))
    m["threshold_map_log_sd"] = float(np.log(tmap).std())
    # does the map carry over to the held-out half? its high-passed residual there, without and with
    from benchmarks._s2r_measure import sensor_pattern

    ho = pairs.half(held_out=True)
    real_ho = [pairs.real[i] for i in ho]
    both = np.r_[np.zeros(len(ho), bool), np.ones(len(ho), bool)]
    m["threshold_map_held_out_residual_sd"] = {
        name: sensor_pattern(real_ho + real_ho, _generate({**cur, "threshold_sigma": 0.0, **extra}, pairs, ho) * 2,
                             both)["sensitivity_log_ratio_sd"]
        for name, extra in (("without map", {}), ("with map", {"threshold_map": tuple(tmap)}))}
    cur.update(threshold_sigma=0.0, threshold_map=tuple(round(float(v), 4) for v in tmap))
    steps.append(("+ sensor threshold map", dict(cur)))
    pause_real = _pause_events(real_fit)
    pauses = {a: _pause_events(_generate({**cur, "tremor_px": a}, pairs, fit[::2])) for a in TREMOR_GRID}
    tremor = min(TREMOR_GRID, key=lambda a: abs(pauses[a] - pause_real))
    m["tremor"] = {"pause_events_real": pause_real, "pause_events_by_tremor_px": pauses, "tremor_px": tremor}
    cur["tremor_px"] = tremor
    steps.append(("+ tremor", dict(cur)))
    log("refitting the digit's appearance")
    m["refit"] = refit_shape(cur, pairs, fit[::2], evals=refit_evals, log=log)
    cur = _with_threshold_scale(m["refit"]["values"], cur)
    steps.append(("+ refit appearance (scale, gamma, blur, black level, thresholds, placement)", dict(cur)))
    gen_fit = _generate(cur, pairs, fit)
    m["gain_sigma"] = round(min(measure_gain(real_fit, gen_fit), 1.0), 4)
    cur["gain_sigma"] = m["gain_sigma"]
    steps.append(("+ per-recording gain", dict(cur)))
    m["timing"] = measure_timing(real_fit, gen_fit)
    m["end"] = measure_end(real_fit)
    cur.update(m["timing"], **m["end"])
    steps.append(("+ per-recording saccade time warp and recording end", dict(cur)))
    return steps, m


def run(real_root: Path, out: Path, *, smoke: bool, log=print) -> dict:
    import torch

    from benchmarks._s2r_c2st import c2st_accuracy, c2st_views
    from benchmarks._s2r_measure import paired_diagnosis
    from flexsnn.io_utils import atomic_write_json, git_hash, machine_info

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load = {"start": os.getloadavg()}
    pairs = Pairs(real_root, limit_per_class=8 if smoke else None)
    all_pos = np.arange(len(pairs.real))
    epochs = 2 if smoke else 20
    v4 = _generate({}, pairs, all_pos)
    diagnosis = paired_diagnosis(pairs.real, v4, pairs.held_out)
    log(f"diagnosis: logistic C2STs {diagnosis['logreg_c2st']}")
    steps, measured = measured_steps(pairs, refit_evals=6 if smoke else 90, log=log)
    fit, ho = pairs.half(held_out=False), pairs.half(held_out=True)
    attempts = []
    for name, params in steps:
        t1 = time.perf_counter()
        gen = v4 if not params else _generate(params, pairs, all_pos)
        gen_s = time.perf_counter() - t1
        halves = ([pairs.real[i] for i in fit], [gen[i] for i in fit],
                  [pairs.real[i] for i in ho], [gen[i] for i in ho])
        views = c2st_views(*halves, epochs=epochs)
        full = c2st_accuracy(*halves, seed=0, epochs=epochs)
        diag = paired_diagnosis(pairs.real, gen, pairs.held_out)
        row = {"name": name, "c2st_accuracy": full, "c2st_views": views,
               "generation_seconds_per_1000": gen_s * 1000 / len(gen),
               "params": {k: (v if not k.endswith("_map") else "measured map (34x34)") for k, v in params.items()},
               "diagnosis": {k: diag[k] for k in ("isolated_pixels_p1_share", "active_pixels",
                                                  "pixel_count_hist_l1", "events_log_sd",
                                                  "pause_events_90_100ms", "logreg_c2st")}}
        attempts.append(row)
        log(f"{name}: C2ST {full:.3f}; views " + ", ".join(f"{k} {v:.2f}" for k, v in views.items()))
    result = {
        "diagnosis_v4": diagnosis, "measured": {k: v for k, v in measured.items()},
        "attempts": attempts, "threshold_map": list(steps[-1][1].get("threshold_map", ())),
        "noise_map": list(steps[-1][1].get("noise_map", ())),
        "final_params": {k: v for k, v in steps[-1][1].items() if not k.endswith("_map")},
        "n_pairs": len(pairs.real), "c2st_epochs": epochs, "target_c2st_max": 0.65, "smoke": smoke,
        "seconds": time.perf_counter() - t0, "load_average": {**load, "end": os.getloadavg()},
        "machine": machine_info(), "git_hash": git_hash(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "c2st_attempts.json", result)
    return result


def controls(real_root: Path, out: Path, *, smoke: bool, log=print) -> dict:
    """C2ST (full and count image) between generator seeds 1 and 0 of the same images, with
    v4's threshold mismatch and with none: the classifier's floor for two sensors of one model."""
    import torch

    from benchmarks._s2r_c2st import _count_image, _held_out_accuracy, c2st_accuracy
    from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images
    from flexsnn.io_utils import atomic_write_json, git_hash, machine_info

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pairs = Pairs(real_root, limit_per_class=8 if smoke else None)
    images, _ = load_mnist_images()
    fit, ho = pairs.half(held_out=False), pairs.half(held_out=True)
    epochs = 2 if smoke else 20
    rows = {}
    for name, over in (("v4, generator seed 1 vs 0", {}),
                       ("v4 without threshold mismatch, seed 1 vs 0", {"threshold_sigma": 0.0})):
        a, b = (SaccadeGenerator(SaccadeParams(**over), seed=s) for s in (0, 1))
        ra = [a.generate(images[i], int(i)) for i in pairs.image_index]
        rb = [b.generate(images[i], int(i)) for i in pairs.image_index]
        halves = ([rb[i] for i in fit], [ra[i] for i in fit], [rb[i] for i in ho], [ra[i] for i in ho])
        rows[name] = {"c2st_accuracy": c2st_accuracy(*halves, seed=0, epochs=epochs),
                      "count_image": _held_out_accuracy(_count_image, *halves, seed=0, epochs=epochs,
                                                        batch_size=64),
                      "threshold_sigma": SaccadeParams(**over).threshold_sigma}
        log(f"{name}: C2ST {rows[name]['c2st_accuracy']:.3f}, count image {rows[name]['count_image']:.3f}")
    result = {"controls": rows, "n_pairs": len(pairs.real), "c2st_epochs": epochs, "smoke": smoke,
              "seconds": time.perf_counter() - t0, "load_average": os.getloadavg(),
              "machine": machine_info(), "git_hash": git_hash()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "c2st_controls.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true", help="80 pairs, 2 epochs, a short refit")
    ap.add_argument("--controls", action="store_true",
                    help="only the controls: C2ST between two generator seeds (c2st_controls.json)")
    args = ap.parse_args(argv)
    if not (args.real / "Train").is_dir():
        print(f"real N-MNIST recordings not found at {args.real}; pass --real DIR", file=sys.stderr)
        return 2
    if args.controls:
        controls(args.real, args.out, smoke=args.smoke)
        print(f"wrote {args.out / 'c2st_controls.json'}")
        return 0
    r = run(args.real, args.out, smoke=args.smoke)
    names = list(r["attempts"][0]["c2st_views"])
    print(f"\n{'attempt':<44} {'C2ST':>6} " + " ".join(f"{n[:12]:>12}" for n in names))
    for a in r["attempts"]:
        print(f"{a['name'][:44]:<44} {a['c2st_accuracy']:>6.3f} "
              + " ".join(f"{a['c2st_views'][n]:>12.3f}" for n in names))
    print(f"target: C2ST <= 0.65; wrote {args.out / 'c2st_attempts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
