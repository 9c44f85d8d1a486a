"""Whose events give the renderer away: busy pixels' events from other real recordings, and the
sampler's background drawn with the signal or apart (the study behind generator version 8).

Part 1, **donors**: hybrids of the real recordings whose busy pixels (>= ``BUSY`` expected events
over the recording, both polarities) take their events from another real recording: the one
whose expected profile (``[2, n_bins]`` square-root rates) at the donor pixel is nearest to the
recipient pixel's. The donor pixel is the same sensor pixel (``same``), one donor recording per
2x2 block of pixels (``block2``), or a pixel 1 or 2 px away (``shift1``, ``shift2``). Event times
are scaled to the recipient's duration. The C2ST of the real recordings against the hybrids says
whether a real pixel's events, taken out of their recording, still pass for real.

Part 2, **sampler arms**: the renderer's rates (``--model``; version 7's for the ablation that
led to version 8: ``git show e2f6573~1:data/assets/learned_dvs.npz > v7.npz``) sampled with
the background (the image-independent part of the rates) drawn with the signal or apart, at
several renewal shapes and burst sizes (:data:`SAMPLER_ARMS`).

    python benchmarks/c2st_pixels.py --model v7.npz   # ~8 min on 2 cores
    python benchmarks/c2st_pixels.py --smoke          # seconds
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Expected events per pixel (both polarities, whole recording) from which a pixel is busy.
BUSY = 6.0
SIZE = 34
#: Sampler arms: name -> changes to the model's sampler (``None``: as shipped).
SAMPLER_ARMS: dict[str, dict | None] = {
    "as --model ships it": None,
    "background with the signal (regular, in the bursts)": {"noise_shape": None},
    "background apart, Poisson": {"noise_shape": 1.0},
    "background apart, Poisson; signal bursts off": {"noise_shape": 1.0, "burst_size": 1.0},
    "background apart, Poisson; signal shape 34, bursts 1.4": {"noise_shape": 1.0, "renewal_shape": 34.0,
                                                               "burst_size": 1.4},
    "background apart, shape 0.5; signal shape 34, bursts 1.4": {"noise_shape": 0.5, "renewal_shape": 34.0,
                                                                 "burst_size": 1.4},
    "background apart, shape 2; signal shape 34, bursts 1.4": {"noise_shape": 2.0, "renewal_shape": 34.0,
                                                               "burst_size": 1.4},
    "background apart, shape 34; signal shape 34, bursts 1.4": {"noise_shape": 34.0, "renewal_shape": 34.0,
                                                                "burst_size": 1.4},
    "background with the signal; signal shape 34, bursts 1.4": {"noise_shape": None, "renewal_shape": 34.0,
                                                                "burst_size": 1.4},
}


def events_by_pixel(recs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each recording's events sorted by pixel (``y * 34 + x``) and the start of each pixel's run
    (``[34 * 34 + 1]``)."""
    out = []
    for r in recs:
        pid = r["y"].astype(np.int64) * SIZE + r["x"]
        order = np.argsort(pid, kind="stable")
        out.append((r[order], np.searchsorted(pid[order], np.arange(SIZE * SIZE + 1))))
    return out


def nearest_donors(profiles: np.ndarray, busy: np.ndarray, donor_pixel: np.ndarray) -> np.ndarray:
    """``[N, P]`` donor recording of each busy (recording, pixel): among the other recordings,
    the one whose profile at ``donor_pixel[p]`` is nearest to the recipient's at ``p``
    (``profiles`` ``[N, D, P]``, ``busy`` ``[N, P]`` bool; -1 where not busy)."""
    import torch

    prof = torch.from_numpy(np.ascontiguousarray(profiles.transpose(2, 0, 1))).float()  # [P, N, D]
    donor = np.full(busy.shape, -1)
    for p in np.flatnonzero(busy.any(0)):
        rec = np.flatnonzero(busy[:, p])
        d = torch.cdist(prof[p, rec], prof[donor_pixel[p]])
        d[np.arange(rec.size), rec] = np.inf  # never the recording itself
        donor[rec, p] = d.argmin(1).numpy()
    return donor


def block_donors(profiles: np.ndarray, busy: np.ndarray, block: int = 2) -> np.ndarray:
    """As :func:`nearest_donors` at the same pixel, but one donor per ``block`` x ``block`` block of
    pixels, nearest by the block's joint profile."""
    import torch

    n = profiles.shape[0]
    donor = np.full(busy.shape, -1)
    for by in range(0, SIZE, block):
        for bx in range(0, SIZE, block):
            px = [(by + a) * SIZE + bx + b for a in range(block) for b in range(block)
                  if by + a < SIZE and bx + b < SIZE]
            rec = np.flatnonzero(busy[:, px].any(1))
            if rec.size == 0:
                continue
            prof = torch.from_numpy(profiles[:, :, px].reshape(n, -1)).float()
            d = torch.cdist(prof[rec], prof)
            d[np.arange(rec.size), rec] = np.inf
            donor[np.ix_(rec, px)] = d.argmin(1).numpy()[:, None]
    return np.where(busy, donor, -1)


def shifted_pixels(k: int, seed: int) -> np.ndarray:
    """``[P]`` for each pixel a pixel at Chebyshev distance ``k`` on the sensor (random direction;
    the pixel itself where none fits)."""
    rng = np.random.default_rng(seed)
    out = np.arange(SIZE * SIZE)
    for p in range(SIZE * SIZE):
        y, x = divmod(p, SIZE)
        for _ in range(50):
            dy, dx = rng.integers(-k, k + 1, 2)
            if max(abs(dy), abs(dx)) == k and 0 <= y + dy < SIZE and 0 <= x + dx < SIZE:
                out[p] = (y + dy) * SIZE + x + dx
                break
    return out


def donor_hybrids(real: list[np.ndarray], busy: np.ndarray, donor: np.ndarray,
                  donor_pixel: np.ndarray) -> list[np.ndarray]:
    """Real recordings whose busy pixels ``[N, P]`` hold the events of ``donor[i, p]``'s pixel
    ``donor_pixel[p]``, times scaled to the recipient's duration."""
    indexed = events_by_pixel(real)
    duration = np.array([max(int(r["t"].max()), 1) if len(r) else 1 for r in real])
    out = []
    for i, r in enumerate(real):
        parts = [r[~busy[i][r["y"].astype(np.int64) * SIZE + r["x"]]]]
        for p in np.flatnonzero(busy[i]):
            j, q = donor[i, p], donor_pixel[p]
            ev, start = indexed[j]
            e = ev[start[q]:start[q + 1]].copy()
            e["y"], e["x"] = divmod(p, SIZE)
            e["t"] = (e["t"].astype(np.float64) * duration[i] / duration[j]).astype(e["t"].dtype)
            parts.append(e)
        allev = np.concatenate(parts)
        out.append(allev[np.argsort(allev["t"], kind="stable")])
    return out


def main(argv: list[str] | None = None) -> dict:
    from flexsnn.io_utils import provenance

    from benchmarks._c2st_study import load_study, study_parser, study_record, write_result

    t_start = time.perf_counter()
    ap = study_parser(__doc__, "unused here")
    ap.add_argument("--parts", default="donors,sampler", help="donors, sampler or both (comma-separated)")
    study = load_study(ap, argv)
    parts = set(study.args.parts.split(","))
    rates = study.rates  # [N, 2, n_bins, 34, 34]
    n = rates.shape[0]
    busy = rates.sum((1, 2)).reshape(n, -1) >= BUSY
    result: dict = {"busy_min_expected_events": BUSY, "model": str(study.model.path)}
    if "donors" in parts:
        profiles = np.sqrt(rates).reshape(n, -1, SIZE * SIZE)
        same = np.arange(SIZE * SIZE)
        arms = {"same": (lambda: nearest_donors(profiles, busy, same), same),
                "block2": (lambda: block_donors(profiles, busy), same)}
        for k in (1, 2):
            moved = shifted_pixels(k, seed=study.args.seed + k)
            arms[f"shift{k}"] = ((lambda m=moved: nearest_donors(profiles, busy, m)), moved)
        result["donors"] = {}
        for name, (find, pixel) in arms.items():
            acc = study.c2st(donor_hybrids(study.real, busy, find(), pixel))
            result["donors"][name] = {"c2st_per_seed": acc, "c2st": float(np.mean(acc))}
            print(f"  donors {name:8s} C2ST {np.mean(acc):.3f}  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    if "sampler" in parts:
        result["sampler_arms"] = {}
        for name, change in SAMPLER_ARMS.items():
            model = study.model if change is None else study.model.with_sampler(
                dataclasses.replace(study.model.sampler, **change))
            rng = np.random.default_rng(study.args.seed)
            acc = study.c2st([model.sample(r, rng) for r in rates])
            result["sampler_arms"][name] = {"sampler": dataclasses.asdict(model.sampler),
                                            "c2st_per_seed": acc, "c2st": float(np.mean(acc))}
            print(f"  {name:60s} C2ST {np.mean(acc):.3f}  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    result |= {**study_record(study), "seconds": time.perf_counter() - t_start, **provenance()}
    write_result(study, "c2st_pixels", result)
    return result


if __name__ == "__main__":
    main()
