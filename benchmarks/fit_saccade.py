"""Fit the saccade-mnist generator's parameters to paired real N-MNIST recordings.

An optimizer (Powell's method, scipy) moves the parameter vector (placement, saccade amplitude,
contrast thresholds, their mismatch and ON/OFF correlation, refractory period, timing jitter,
latency tail, background noise, black level, display gamma, blur; with ``--speed cosine`` also
the saccade timing) to minimise :func:`benchmarks._s2r_stats.discrepancy` between real
recordings and generated recordings of the same images: the mismatch of binned frames at
T = 3, 5, 10 (per bin and polarity, paired), of event counts per bin and polarity at T = 10 and
30, and of the per-pixel count, inter-event-interval and ON/OFF-balance distributions. The
saccade speed profile (``--speed measured``, the default) and the hot pixels are measured, not
fitted. It fits on the pairs of even rank within their class (the "fit" half) and reports the
same objective on the held-out odd-rank half, before and after.

Usage::

    python benchmarks/fit_saccade.py --pairs 200 --evals 400     # writes results/saccade_fit.json
    python benchmarks/fit_saccade.py --smoke --out /tmp/fit
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._s2r_data import DEFAULT_REAL, PREVIOUS_PARAMS, REPO, Pairs  # noqa: E402
from benchmarks._s2r_stats import discrepancy  # noqa: E402

#: (name, to-vector, from-vector): the optimizer works on unit-scaled, unconstrained values.
_LOG = (lambda v, s: math.log(max(v, 1e-9)) / s, lambda u, s: math.exp(u * s))
_LIN = (lambda v, s: v / s, lambda u, s: u * s)
COORDS = (
    # name, transform, scale (one unit of the optimizer), lower bound of the value
    ("offset_x_px", _LIN, 1.0),
    ("offset_y_px", _LIN, 1.0),
    ("time_shift_us", _LIN, 5000.0),
    ("time_stretch", _LOG, 0.05),
    ("path_scale", _LOG, 0.1),
    ("threshold_on", _LOG, 0.2),
    ("threshold_off", _LOG, 0.2),
    ("threshold_sigma", _LOG, 0.5),
    ("refractory_us", _LOG, 0.5),
    ("jitter_us", _LOG, 0.5),
    ("latency_tail_us", _LOG, 0.5),
    ("noise_hz", _LOG, 0.5),
    ("background", _LOG, 0.3),
    ("blur_sigma_px", _LOG, 0.5),
    ("display_gamma", _LOG, 0.3),
    ("threshold_correlation", _LIN, 0.3),
)
#: coordinates that move the motion windows; left out when the speed profile is measured
#: (the measured profile fixes the saccades' timing)
TIMING_COORDS = ("time_shift_us", "time_stretch")


def base_windows():
    from flexsnn.data.saccade import SaccadeParams

    return np.asarray(SaccadeParams().motion_windows_us, dtype=float)


def base_path():
    return np.array([[0.0, 0.0], [3.5, 7.0], [7.0, 0.0], [0.0, 0.0]])


def params_from_values(values: dict, fixed: dict):
    """SaccadeParams from fitted values (time shift/stretch of the default motion windows,
    path scale of the N-MNIST triangle) and fixed settings (which may fix the windows)."""
    from flexsnn.data.saccade import SaccadeParams

    v = dict(values)
    shift, stretch = v.pop("time_shift_us", 0.0), v.pop("time_stretch", 1.0)
    extra = {}
    if "motion_windows_us" not in fixed:
        win = np.clip(base_windows() * stretch + shift, 0.0, None)
        extra["motion_windows_us"] = tuple((round(float(a), 1), round(float(b), 1)) for a, b in win)
    path = base_path() * v.pop("path_scale")
    v["background"] = min(v["background"], 0.95)
    v["threshold_correlation"] = min(max(v.get("threshold_correlation", 0.0), 0.0), 0.95)
    v["display_gamma"] = min(max(v.get("display_gamma", 1.0), 0.2), 5.0)
    return SaccadeParams(path_px=tuple((round(float(x), 4), round(float(y), 4)) for x, y in path),
                         **{k: round(float(x), 6) for k, x in v.items()}, **extra, **fixed)


def coords(measured_speed: bool) -> tuple:
    return tuple(c for c in COORDS if not (measured_speed and c[0] in TIMING_COORDS))


def to_vector(values: dict, cs: tuple = COORDS) -> np.ndarray:
    return np.array([tr[0](values[n], s) for n, tr, s in cs])


def from_vector(u: np.ndarray, cs: tuple = COORDS) -> dict:
    return {n: tr[1](float(x), s) for (n, tr, s), x in zip(cs, u)}


def start_values(start: str = "current") -> dict:
    """Fit values to start from: the generator's current defaults (``"current"``), or its
    parameters before the sim-to-real fit (``"previous"``, the issue-2 calibration)."""
    from flexsnn.data.saccade import SaccadeParams

    if start == "current":
        cur = dataclasses.asdict(SaccadeParams())
        vals = {n: cur[n] for n, _tr, _s in COORDS if n in cur}
        vals.update(time_shift_us=0.0, time_stretch=1.0,
                    path_scale=float(np.asarray(cur["path_px"])[1, 1] / base_path()[1, 1]))
        vals["threshold_correlation"] = max(vals["threshold_correlation"], 0.3)
        return vals
    vals = {n: PREVIOUS_PARAMS[n] for n, _tr, _s in COORDS if n in PREVIOUS_PARAMS}
    vals.update(time_shift_us=0.0, time_stretch=1.0, path_scale=1.0, display_gamma=1.0,
                threshold_correlation=0.3)
    vals["latency_tail_us"] = max(vals.get("latency_tail_us", 0.0), 500.0)
    vals["blur_sigma_px"] = max(vals.get("blur_sigma_px", 0.0), 0.3)
    return vals


def measure_speed_profile(recs: list[np.ndarray], *, dt_us: float = 2000.0,
                          duration_us: float = 316_000.0) -> dict:
    """The saccades' relative speed, measured as the real recordings' mean event rate per
    ``dt_us`` bin minus its floor (the 3rd percentile: noise and the sensor's idle rate),
    scaled to a maximum of 1; and the motion windows it implies, split at the rate's minima
    near the two pauses (80-115 ms and 200-225 ms)."""
    edges = np.arange(0.0, duration_us + dt_us, dt_us)
    rate = np.mean([np.histogram(r["t"], bins=edges)[0] for r in recs], axis=0).astype(float)
    speed = np.clip(rate - np.percentile(rate, 3), 0.0, None)
    speed /= max(speed.max(), 1e-12)

    def minimum(lo_us: float, hi_us: float) -> float:
        lo, hi = int(lo_us // dt_us), int(hi_us // dt_us)
        return float((lo + int(np.argmin(speed[lo:hi]))) * dt_us)

    b1, b2 = minimum(80_000, 115_000), minimum(200_000, 225_000)
    return {"speed_profile": tuple(round(float(v), 4) for v in speed), "speed_profile_dt_us": dt_us,
            "motion_windows_us": ((0.0, b1), (b1, b2), (b2, float(edges[-1])))}


def evaluate(params, pairs: Pairs, positions: np.ndarray, real_cache: dict | None = None):
    from flexsnn.data.saccade import SaccadeGenerator, load_mnist_images

    images, _ = load_mnist_images()
    idx = pairs.image_index[positions]
    gen = SaccadeGenerator(params, seed=0).generate_many(images[idx], idx)
    return discrepancy([pairs.real[i] for i in positions], gen, real_cache=real_cache)


def estimate_hot_pixels(recs: list[np.ndarray], duration_us: float = 315_000.0) -> dict:
    """Hot pixels of the real sensor, from the per-pixel events per recording ``m`` and its
    5x5 median ``med``: pixels with ``m > 3 med`` and an excess ``m - med`` over 0.5 events per
    recording. Returns ``hot_pixel_fraction`` and ``hot_pixel_hz`` (mean excess rate) and the
    pixels found."""
    from scipy.ndimage import median_filter

    m = np.zeros((34, 34))
    for r in recs:
        np.add.at(m, (r["y"].astype(np.int64), r["x"].astype(np.int64)), 1.0)
    m /= max(len(recs), 1)
    med = median_filter(m, size=5, mode="nearest")
    hot = (m > 3 * med) & (m - med > 0.5)
    excess = (m - med)[hot]
    yx = np.argwhere(hot)
    return {"hot_pixel_fraction": round(float(hot.sum()) / m.size, 6),
            "hot_pixel_hz": round(float(excess.mean() / (duration_us * 1e-6)) if hot.any() else 0.0, 3),
            "hot_pixels": tuple((int(x), int(y), round(float(e) / (duration_us * 1e-6), 2))
                                for (y, x), e in zip(yx, excess)),
            "pixels_yx": yx.tolist(), "excess_per_recording": excess.round(3).tolist()}


def fit(pairs: Pairs, *, n_pairs: int, evals: int, fixed: dict, log=print,
        progress_path: Path | None = None, start: str = "current") -> dict:
    """Powell's method over :data:`COORDS` on ``n_pairs`` fit-half pairs (class-balanced)."""
    from scipy.optimize import minimize

    from flexsnn.data.splits import balanced_subset

    fit_pos = pairs.half(held_out=False)
    fit_pos = fit_pos[balanced_subset(pairs.labels[fit_pos], n_pairs)]
    cache: dict = {}
    trace: list[float] = []
    best = {"f": math.inf, "u": None}
    t0 = time.perf_counter()

    cs = coords(fixed.get("velocity") == "measured")

    def objective(u: np.ndarray) -> float:
        try:
            params = params_from_values(from_vector(u, cs), fixed)
        except Exception:  # out of the valid range: a wall, not a crash
            return 10.0
        f, _parts = evaluate(params, pairs, fit_pos, cache)
        trace.append(f)
        if f < best["f"]:
            best.update(f=f, u=u.copy())
        if len(trace) % 20 == 0:
            log(f"eval {len(trace)}: best {best['f']:.4f} ({time.perf_counter() - t0:.0f} s)")
            if progress_path is not None:
                from flexsnn.io_utils import atomic_write_json

                atomic_write_json(progress_path, {"evals": len(trace), "objective": best["f"],
                                                  "values": from_vector(best["u"], cs), "fixed": fixed})
        return f

    u0 = to_vector(start_values(start), cs)
    # Powell: a line search along each coordinate in turn (the coordinates are scaled so one
    # unit is a sensible step); Nelder-Mead in 14 dimensions made no progress in 60 evaluations
    res = minimize(objective, u0, method="Powell",
                   options={"maxfev": evals, "xtol": 0.05, "ftol": 1e-4, "direc": np.eye(u0.size)})
    return {"values": from_vector(best["u"], cs), "start_values": start_values(start), "objective": best["f"],
            "evals": len(trace), "trace": trace, "seconds": time.perf_counter() - t0,
            "fit_positions": fit_pos.tolist(), "scipy_message": str(res.message)}


def run(real_root: Path, out: Path, *, n_pairs: int, evals: int, smoke: bool,
        speed: str = "measured", start: str = "current") -> dict:
    from flexsnn.data.saccade import SaccadeParams
    from flexsnn.io_utils import atomic_write_json, git_hash, machine_info

    pairs = Pairs(real_root, limit_per_class=6 if smoke else None)
    fit_recs = [pairs.real[i] for i in pairs.half(held_out=False)]
    hot = estimate_hot_pixels(fit_recs)
    # the real sensor's hot pixels, where they are (a random placement lets a classifier tell
    # real from generated by the pixel alone)
    fixed = {"invert_polarity": True, "hot_pixels": hot["hot_pixels"]}
    if speed == "measured":
        fixed.update(velocity="measured", **measure_speed_profile(fit_recs))
    else:
        fixed.update(velocity="cosine", speed_profile=())
    out.mkdir(parents=True, exist_ok=True)
    result = fit(pairs, n_pairs=n_pairs, evals=evals, fixed=fixed,
                 progress_path=out / "saccade_fit.progress.json", start=start)
    result["hot_pixels"] = hot
    fitted = params_from_values(result["values"], fixed)
    check = pairs.half(held_out=True)
    previous = SaccadeParams(**PREVIOUS_PARAMS)
    before_fit, _ = evaluate(previous, pairs, pairs.half(held_out=False))
    rows = {}
    for name, p in (("previous defaults", previous),
                    ("previous + invert_polarity", dataclasses.replace(previous, invert_polarity=True)),
                    ("before this fit (current defaults)", SaccadeParams()),
                    ("fitted", fitted)):
        f, parts = evaluate(p, pairs, check)
        rows[name] = {"objective": f, **parts}
    summary = {
        "fitted_params": dataclasses.asdict(fitted), "fit": result,
        "objective_fit_half_previous": before_fit, "check_half": rows, "n_check": int(check.size),
        "smoke": smoke, "machine": machine_info(), "git_hash": git_hash(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "saccade_fit.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--pairs", type=int, default=200, help="fit-half pairs the objective uses")
    ap.add_argument("--evals", type=int, default=400, help="objective evaluations (Powell)")
    ap.add_argument("--speed", choices=("measured", "cosine"), default="measured",
                    help="saccade speed: the real recordings' measured profile (fixes the timing) "
                         "or a raised cosine inside fitted motion windows")
    ap.add_argument("--start", choices=("current", "previous"), default="current",
                    help="start from the generator's current defaults or from the issue-2 ones")
    ap.add_argument("--smoke", action="store_true", help="60 pairs, few evaluations")
    args = ap.parse_args(argv)
    if not (args.real / "Train").is_dir():
        print(f"real N-MNIST recordings not found at {args.real}", file=sys.stderr)
        return 2
    s = run(args.real, args.out, n_pairs=30 if args.smoke else args.pairs,
            evals=10 if args.smoke else args.evals, smoke=args.smoke, speed=args.speed,
            start=args.start)
    print(f"{'generator':<36} {'objective':>9} {'frame corr':>10} {'corr T=10':>9}  (held-out half, "
          f"{s['n_check']} pairs)")
    for name, r in s["check_half"].items():
        print(f"{name:<36} {r['objective']:>9.4f} {r['frame_corr']:>10.3f} {r['corr_by_T'][10]:>9.3f}")
    print("fitted:", {k: v for k, v in s["fitted_params"].items() if k not in ("width", "height")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
