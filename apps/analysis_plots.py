"""Plots of the analyses (noise robustness, early exit, simulator early stop), written as PNGs
atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from flexsnn.io_utils import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_noise_curves(curves: dict[str, Any], path: Path, *, title: str) -> Path:
    """Accuracy (mean line, min-max band) vs sigma for each label. ``curves[label]`` is a
    :class:`~flexsnn.training.robustness.NoiseCurve` or its ``to_dict()``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for label, c in curves.items():
        d = c if isinstance(c, dict) else c.to_dict()
        line, = ax.plot(d["sigma"], d["mean"], marker="o", ms=3, label=label)
        ax.fill_between(d["sigma"], d["min"], d["max"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("noise sigma")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_early_exit(points: dict[str, list], path: Path, *, title: str = "early exit (SEENN-I)") -> Path:
    """Accuracy vs mean exit step for each label (``points[label]``: EarlyExitPoint or dicts)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for label, pts in points.items():
        ds = [p if isinstance(p, dict) else p.to_dict() for p in pts]
        ds = sorted(ds, key=lambda d: d["mean_T"])
        ax.plot([d["mean_T"] for d in ds], [d["accuracy"] for d in ds], marker="o", ms=3, label=label)
    ax.set_xlabel("mean time steps")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_early_stop(points: dict[str, list], path: Path, *, title: str = "simulator early stop") -> Path:
    """Two panels: accuracy vs fraction of the duration consumed, and vs fraction of SynOps."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    for label, pts in points.items():
        ds = [p if isinstance(p, dict) else p.to_dict() for p in pts]
        for ax, key in zip(axes, ("fraction_of_duration", "synops_fraction")):
            ax.plot([d[key] for d in ds], [d["accuracy"] for d in ds], marker="o", ms=3, label=label)
            for d in ds:
                ax.annotate(f"k={d['k']}", (d[key], d["accuracy"]), fontsize=6)
    axes[0].set_xlabel("fraction of sample duration consumed")
    axes[1].set_xlabel("fraction of SynOps spent")
    axes[0].set_ylabel("accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
