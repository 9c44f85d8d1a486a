"""Why does the count image give the recordings away? The balance of each pixel's ON and OFF events.

A classifier that sees only the whole-recording count image (``c2st_views``' ``count_image``) tells
real from generated recordings better than the full C2ST does. This study splits that view into
its parts, each a C2ST of its own on the same split as ``sim_to_real`` (fit half trains, held-out
half tests): the ON counts alone, the OFF counts alone, their sum, and their difference ON - OFF.

N-MNIST's saccades bring the digit back to where it started, so each pixel's log intensity ends
where it began and a DVS pixel fires about as many ON as OFF events, in the ratio of its two
thresholds (a fixed pattern of the sensor). The study measures that on the real recordings: a
least-squares fit on the fit half of a pixel's ON - OFF count on

- ``d_pop = S * tanh(r / 2)``, the difference the pixel's *population* ratio predicts (``S`` the
  expected events of both polarities for this image, ``r`` the log ratio of the rate CNN's ON to
  OFF signal summed over all fit images: a per-pixel constant), and
- ``d_cnn``, the difference of the rate CNN's expected ON and OFF events for this image,

checked on the held-out half; and the spread of ON - OFF, real and generated, by expected events.

One arm balances the renderer's draws: after the shipped sampler draws a recording, each interior
pixel (``|r| < 1``, at least ``min_events`` events) moves events between its polarities until its
ON - OFF is the fitted prediction plus Gaussian noise (``noise_sd``): ``k`` random events of the
excess polarity are removed and ``k`` of the other drawn from that polarity's own rate profile.

Writes ``benchmarks/results/c2st_polarity.json`` (``regression``: coefficients and residual sd,
fit and held-out; ``spread``: sd of ON - OFF by expected events, real and per arm; ``arms``: each
arm's ``c2st``, ``c2st_per_seed`` and ``count_views``) and prints a table.

    python benchmarks/c2st_polarity.py            # ~3 min on 2 cores
    python benchmarks/c2st_polarity.py --smoke --out /tmp/polarity
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIXELS = 34 * 34
#: Bands of expected events per pixel (both polarities) of the spread table.
BANDS = ((2.0, 5.0), (5.0, 12.0), (12.0, 100.0))
#: Pixels whose |population log ratio| is below this are balanced (the rest see little signal).
INTERIOR = 1.0
#: (name, balance settings or None)
ARMS = (("shipped renderer", None),
        ("balanced by moving events", {"noise_sd": 0.5, "min_events": 3}))


def population_log_ratio(signal: np.ndarray) -> np.ndarray:
    """``[1156]`` per-pixel log(ON / OFF) of ``signal`` ``[N, 2, n_bins, 34, 34]`` (expected
    signal events, background excluded) summed over recordings and bins."""
    s = signal.sum((0, 2)).reshape(2, PIXELS)
    return np.log((s[1] + 1e-3) / (s[0] + 1e-3))


def difference_features(rates: np.ndarray, log_ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``S``, ``d_pop`` and ``d_cnn`` (each ``[N, 1156]``) of ``rates`` ``[N, 2, n_bins, 34, 34]``."""
    m = rates.sum(2).reshape(len(rates), 2, PIXELS)
    total = m.sum(1)
    return total, total * np.tanh(log_ratio / 2), m[:, 1] - m[:, 0]


def on_minus_off(counts: np.ndarray) -> np.ndarray:
    """``[N, 1156]`` ON - OFF of whole-recording ``counts`` ``[N, 2, 34, 34]`` (polarity 1 is ON)."""
    return (counts[:, 1] - counts[:, 0]).reshape(len(counts), PIXELS)


def fit_difference(diff: np.ndarray, total: np.ndarray, d_pop: np.ndarray, d_cnn: np.ndarray,
                   mask: np.ndarray) -> dict[str, float]:
    """Least squares ``diff ~ a d_pop + b d_cnn + c`` over ``mask`` (all ``[N, 1156]``)."""
    x = np.stack([d_pop[mask], d_cnn[mask], np.ones(int(mask.sum()))], 1)
    coef, *_ = np.linalg.lstsq(x, diff[mask], rcond=None)
    return {"a_pop": float(coef[0]), "b_cnn": float(coef[1]), "c": float(coef[2]),
            "residual_sd": float((diff[mask] - x @ coef).std()), "sd": float(diff[mask].std())}


def check_difference(coef: dict, diff, total, d_pop, d_cnn, mask) -> dict[str, float]:
    """Residual sd of ``coef``'s prediction on other data (same layouts as :func:`fit_difference`)."""
    pred = coef["a_pop"] * d_pop + coef["b_cnn"] * d_cnn + coef["c"]
    return {"residual_sd": float((diff - pred)[mask].std()), "sd": float(diff[mask].std())}


class BalancedRenderer:
    """The model's draws with each interior pixel's ON - OFF moved to the fitted prediction
    (module docstring). ``log_ratio`` ``[1156]``; ``coef`` from :func:`fit_difference`."""

    def __init__(self, model, log_ratio: np.ndarray, coef: dict, *, noise_sd: float, min_events: int) -> None:
        self.model, self.log_ratio, self.coef = model, log_ratio, coef
        self.noise_sd, self.min_events = noise_sd, min_events
        self.interior = np.abs(log_ratio) < INTERIOR

    def moves(self, rates: np.ndarray, events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``[1156]`` events to move per pixel: > 0 from ON to OFF, < 0 from OFF to ON."""
        total, d_pop, d_cnn = (f[0] for f in difference_features(rates[None], self.log_ratio))
        pix = events["y"].astype(np.int64) * 34 + events["x"]
        on = events["p"] == 1
        n_on, n_off = np.bincount(pix[on], minlength=PIXELS), np.bincount(pix[~on], minlength=PIXELS)
        n = n_on + n_off
        c = self.coef
        want = np.round(c["a_pop"] * d_pop + c["b_cnn"] * d_cnn + c["c"] + self.noise_sd * rng.standard_normal(PIXELS))
        want = np.where((want - n) % 2 != 0, want + rng.choice([-1.0, 1.0], PIXELS), want)  # parity of n
        k = ((n_on - n_off) - np.clip(want, -n, n)) // 2
        return np.where((n >= self.min_events) & self.interior, k, 0).astype(np.int64)

    def sample(self, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from flexsnn.data.events import EVENT_DTYPE

        events = self.model.sample(rates, rng)
        k = self.moves(rates, events, rng)
        pix = events["y"].astype(np.int64) * 34 + events["x"]
        order = np.lexsort((rng.random(len(events)), events["p"], pix))  # random within pixel, polarity
        p_sorted, pix_sorted = events["p"][order], pix[order]
        group = pix_sorted * 2 + p_sorted
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
        rank = np.arange(len(events)) - np.repeat(starts, np.diff(np.r_[starts, len(events)]))
        drop = np.where(p_sorted == 1, rank < k[pix_sorted], rank < -k[pix_sorted])
        keep = np.ones(len(events), bool)
        keep[order[drop]] = False
        add_pix = np.repeat(np.arange(PIXELS), np.abs(k))
        add_p = np.repeat(np.where(k > 0, 0, 1), np.abs(k))
        nb = rates.shape[1]
        profile = rates.reshape(2, nb, PIXELS)[add_p, :, add_pix] + 1e-12  # [n_add, n_bins]
        cdf = np.cumsum(profile, 1)
        b = np.minimum((rng.random(len(add_pix))[:, None] * cdf[:, -1:] > cdf).sum(1), nb - 1)
        end = int(events["t"][-1]) if len(events) else 0
        new = np.empty(len(add_pix), EVENT_DTYPE)
        new["x"], new["y"], new["p"] = add_pix % 34, add_pix // 34, add_p
        new["t"] = np.minimum(np.floor((b + rng.random(len(add_pix))) / nb * end), end).astype(np.int64)
        out = np.concatenate([events[keep], new])
        return out[np.argsort(out["t"], kind="stable")]


def count_views(real: list[np.ndarray], gen: list[np.ndarray], cr: np.ndarray, cg: np.ndarray,
                fit: np.ndarray, held: np.ndarray, *, seed: int, epochs: int) -> dict[str, float]:
    """Held-out C2ST of the count image's parts: ``both`` polarities, ``on``, ``off``, ``sum``
    (log1p counts) and ``on_minus_off`` (counts); ``cr`` and ``cg`` are the whole-recording
    counts ``[N, 2, 34, 34]`` of ``real`` and ``gen``."""
    from benchmarks._s2r_c2st import _held_out_accuracy

    parts = {"both": lambda c: np.log1p(c), "on": lambda c: np.log1p(c[:, 1:]),
             "off": lambda c: np.log1p(c[:, :1]), "sum": lambda c: np.log1p(c.sum(1, keepdims=True)),
             "on_minus_off": lambda c: c[:, 1:] - c[:, :1]}
    out = {}
    for name, part in parts.items():
        table = {id(r): f for r, f in zip(real, part(cr))} | {id(g): f for g, f in zip(gen, part(cg))}

        def feature(recs, table=table):
            return np.stack([table[id(r)] for r in recs]).astype(np.float32)

        out[name] = _held_out_accuracy(feature, [real[i] for i in fit], [gen[i] for i in fit],
                                       [real[i] for i in held], [gen[i] for i in held],
                                       seed=seed, epochs=epochs, batch_size=64)
    return out


def spread(diff: np.ndarray, total: np.ndarray) -> dict[str, float]:
    """sd of ON - OFF ``[N, 1156]`` per band of expected events :data:`BANDS`."""
    return {f"{lo:g}-{hi:g}": float(diff[(total >= lo) & (total < hi)].std()) for lo, hi in BANDS}


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result
    from benchmarks._s2r_stats import count_images

    t_start = time.perf_counter()
    study = load_study(study_parser(__doc__, "unused here"), argv)
    fit, held, real = study.fit, study.held, study.real
    log_ratio = population_log_ratio(np.maximum(study.rates[fit] - study.model.noise_rates(), 0.0))
    total, d_pop, d_cnn = difference_features(study.rates, log_ratio)
    real_counts = count_images(real)
    diff = on_minus_off(real_counts)
    mask = (total >= 2) & (np.abs(log_ratio) < INTERIOR)[None]
    coef = fit_difference(diff[fit], total[fit], d_pop[fit], d_cnn[fit], mask[fit])
    result: dict = {"interior": INTERIOR, "model": str(study.model.path),
                    "regression": {"fit": coef, "held_out": check_difference(
                        coef, diff[held], total[held], d_pop[held], d_cnn[held], mask[held])},
                    "spread": {"real": spread(diff[held], total[held])}, "arms": {}}
    print(f"  ON - OFF ~ {coef['a_pop']:.2f} d_pop + {coef['b_cnn']:.2f} d_cnn + {coef['c']:.2f}: residual sd "
          f"{coef['residual_sd']:.2f} (fit), {result['regression']['held_out']['residual_sd']:.2f} (held out); "
          f"sd of ON - OFF {coef['sd']:.2f}")
    for name, balance in ARMS:
        renderer = study.model if balance is None else BalancedRenderer(study.model, log_ratio, coef, **balance)
        rng = np.random.default_rng(study.args.seed)
        gen = [renderer.sample(r, rng) for r in study.rates]
        acc = study.c2st(gen)
        gen_counts = count_images(gen)
        views = count_views(real, gen, real_counts, gen_counts, fit, held, seed=study.seeds[0],
                            epochs=study.args.c2st_epochs)
        result["spread"][name] = spread(on_minus_off(gen_counts[held]), total[held])
        result["arms"][name] = {"balance": balance, "c2st_per_seed": acc, "c2st": float(np.mean(acc)),
                                "count_views": views}
        print(f"  {name:28s} C2ST {np.mean(acc):.3f}  count image: " + "  ".join(f"{k} {v:.2f}" for k, v in views.items())
              + f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    print("  sd of ON - OFF by expected events: " + "; ".join(
        f"{who}: " + " ".join(f"{b} {v:.2f}" for b, v in s.items()) for who, s in result["spread"].items()))
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_polarity", result)
    return result


if __name__ == "__main__":
    main()
