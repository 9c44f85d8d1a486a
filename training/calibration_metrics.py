"""Accuracy and calibration error (ECE, AdaECE) of the prediction at every output time step.

The prediction at step t (0-based) comes from the cumulative mean of the logits up to t,
``Ō_t = mean_{i<=t} O_i``: confidence = ``max softmax(Ō_t)``, predicted class = its argmax.

* ECE (Guo et al. 2017): 15 equal-width confidence bins on [0, 1] (bin b = ``(b/15, (b+1)/15]``,
  the first bin also holds confidence 0), ``ECE = Σ_b |B_b|/N · |acc(B_b) - conf(B_b)|``.
* AdaECE (adaptive ECE, Nguyen & O'Connor / Mukhoti et al. 2020, as used by TMC): 15 bins holding
  equal numbers of samples (sorted by confidence, split by ``numpy.array_split``, so sizes differ by at
  most one), same weighted sum.

Everything here is computed in float64 NumPy from logits float ``[T, B, K]`` (or accumulated over
batches with :class:`CalibrationAccumulator`) and returns plain Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from flexsnn.errors import ConfigError

__all__ = [
    "N_BINS",
    "CalibrationAccumulator",
    "CalibrationReport",
    "adaptive_ece",
    "calibration_per_step",
    "cumulative_confidences",
    "evaluate_calibration",
    "expected_calibration_error",
    "reliability_bins",
    "save_reliability_diagram",
]

N_BINS = 15


def cumulative_confidences(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and predicted class at every step from the cumulative-mean logits.

    Args:
        logits: float ``[T, B, K]``.

    Returns:
        ``(confidence float64 [T, B] in [0, 1], prediction int64 [T, B])``.
    """
    if logits.dim() != 3:
        raise ConfigError("logits", tuple(logits.shape), "a [T, B, K] tensor (time first)")
    with torch.no_grad():
        x = logits.detach().to(torch.float64)
        counts = torch.arange(1, x.shape[0] + 1, dtype=torch.float64, device=x.device).view(-1, 1, 1)
        cum = torch.cumsum(x, dim=0) / counts
        conf, pred = torch.softmax(cum, dim=-1).max(dim=-1)
    return conf.cpu().numpy(), pred.cpu().numpy().astype(np.int64)


def _check(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != correct.shape:
        raise ConfigError("correct", correct.shape, f"the shape of confidences {conf.shape}")
    if n_bins < 1:
        raise ConfigError("n_bins", n_bins, "a positive number of bins")
    if conf.size and (conf.min() < 0.0 or conf.max() > 1.0):
        raise ConfigError("confidences", (conf.min(), conf.max()), "values in [0, 1]")
    return conf, correct


def reliability_bins(
    conf: np.ndarray, correct: np.ndarray, *, n_bins: int = N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins: ``(count [n_bins] int64, mean accuracy [n_bins], mean confidence [n_bins])``.

    Empty bins have accuracy and confidence NaN. Bin b holds confidences in ``(b/n, (b+1)/n]``
    (confidence 0 goes to bin 0).
    """
    conf, correct = _check(conf, correct, n_bins)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return count, acc, mean_conf


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, *, n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins (default 15); 0.0 for no samples.

    Args:
        conf: confidences in [0, 1], any shape (flattened).
        correct: 1/0 (or bool) per sample, same shape.
    """
    count, acc, mean_conf = reliability_bins(conf, correct, n_bins=n_bins)
    total = count.sum()
    if total == 0:
        return 0.0
    nz = count > 0
    return float(np.sum(count[nz] / total * np.abs(acc[nz] - mean_conf[nz])))


def adaptive_ece(conf: np.ndarray, correct: np.ndarray, *, n_bins: int = N_BINS) -> float:
    """AdaECE: ``n_bins`` bins with equal sample counts (sorted by confidence); 0.0 for no samples."""
    conf, correct = _check(conf, correct, n_bins)
    n = conf.size
    if n == 0:
        return 0.0
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for part in np.array_split(order, n_bins):
        if part.size:
            total += part.size / n * abs(correct[part].mean() - conf[part].mean())
    return float(total)


@dataclass(frozen=True)
class CalibrationReport:
    """Accuracy and calibration per output step (lists aligned with ``t = 1..T``).

    Attributes:
        accuracy_per_t: fraction correct of the cumulative-mean prediction at each step.
        ece_per_t / adaece_per_t: ECE / AdaECE (15 bins) at each step.
        mean_confidence_per_t: mean max-softmax confidence at each step.
        n_samples: samples evaluated.
    """

    accuracy_per_t: list[float]
    ece_per_t: list[float]
    adaece_per_t: list[float]
    mean_confidence_per_t: list[float]
    n_samples: int

    def to_dict(self) -> dict:
        return {
            "accuracy_per_t": self.accuracy_per_t,
            "ece_per_t": self.ece_per_t,
            "adaece_per_t": self.adaece_per_t,
            "mean_confidence_per_t": self.mean_confidence_per_t,
            "n_samples": self.n_samples,
        }


def _report(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> CalibrationReport:
    """``conf``, ``correct`` float64 ``[T, N]``."""
    return CalibrationReport(
        accuracy_per_t=[float(c.mean()) if c.size else 0.0 for c in correct],
        ece_per_t=[expected_calibration_error(a, c, n_bins=n_bins) for a, c in zip(conf, correct)],
        adaece_per_t=[adaptive_ece(a, c, n_bins=n_bins) for a, c in zip(conf, correct)],
        mean_confidence_per_t=[float(a.mean()) if a.size else 0.0 for a in conf],
        n_samples=int(conf.shape[1]),
    )


def calibration_per_step(logits: torch.Tensor, target: torch.Tensor, *, n_bins: int = N_BINS) -> CalibrationReport:
    """Accuracy, ECE and AdaECE at every step of one batch of logits float ``[T, B, K]``, target ``[B]``."""
    acc = CalibrationAccumulator(n_bins=n_bins)
    acc.update(logits, target)
    return acc.report()


@dataclass
class CalibrationAccumulator:
    """Collect confidences over many batches (same T_out), then :meth:`report`.

    Memory is O(T·N) floats; no logits are kept.
    """

    n_bins: int = N_BINS
    _conf: list[np.ndarray] = field(default_factory=list)
    _correct: list[np.ndarray] = field(default_factory=list)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: logits float ``[T, B, K]``, target int64 ``[B]``."""
        conf, pred = cumulative_confidences(logits)
        if self._conf and self._conf[0].shape[0] != conf.shape[0]:
            raise ConfigError(
                "logits.T", conf.shape[0], f"the T_out of earlier batches ({self._conf[0].shape[0]})",
                hint="use one accumulator per temporal configuration",
            )
        y = target.detach().cpu().numpy().reshape(1, -1)
        self._conf.append(conf)
        self._correct.append((pred == y).astype(np.float64))

    def report(self) -> CalibrationReport:
        if not self._conf:
            raise ConfigError("calibration", "no batches", "at least one update() before report()")
        return _report(np.concatenate(self._conf, axis=1), np.concatenate(self._correct, axis=1), self.n_bins)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(confidence [T, N], correct [T, N])`` collected so far (float64)."""
        return np.concatenate(self._conf, axis=1), np.concatenate(self._correct, axis=1)


def save_reliability_diagram(
    path: str | Path,
    conf: np.ndarray,
    correct: np.ndarray,
    *,
    steps: Sequence[int] | None = None,
    n_bins: int = N_BINS,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> Path:
    """Write a reliability-diagram PNG (one panel per chosen step, atomically).

    Args:
        path: output ``.png``.
        conf, correct: float ``[T, N]`` from :meth:`CalibrationAccumulator.arrays`.
        steps: 0-based steps to draw (default: first, middle and last, deduplicated).
        n_bins: equal-width bins (default 15).
        title: figure title.
        labels: panel names, one per step (default ``"t=<step+1>"``); rows of ``conf`` may also
            be different models at one step, named here.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_path

    conf = np.atleast_2d(np.asarray(conf, dtype=np.float64))
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    t_out = conf.shape[0]
    if steps is None:
        steps = sorted({0, (t_out - 1) // 2, t_out - 1})
    steps = list(steps)
    for s in steps:
        if not 0 <= s < t_out:
            raise ConfigError("steps", s, f"a step index in [0, {t_out - 1}]")
    if labels is None:
        labels = [f"t={s + 1}" for s in steps]
    if len(labels) != len(steps):
        raise ConfigError("labels", len(labels), f"one label per step ({len(steps)})")
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 3.6), squeeze=False)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    for ax, s, label in zip(axes[0], steps, labels):
        count, acc, mean_conf = reliability_bins(conf[s], correct[s], n_bins=n_bins)
        ece = expected_calibration_error(conf[s], correct[s], n_bins=n_bins)
        shown = np.nan_to_num(acc)
        ax.bar(centers, shown, width=1.0 / n_bins, edgecolor="k", color="tab:blue", alpha=0.8, label="accuracy")
        gap = np.where(count > 0, np.nan_to_num(mean_conf) - shown, 0.0)
        ax.bar(centers, gap, bottom=shown, width=1.0 / n_bins, color="tab:red", alpha=0.3, label="gap")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{label}  acc={correct[s].mean():.3f}  ECE={ece:.3f}", fontsize=9)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def evaluate_calibration(
    model: torch.nn.Module,
    batches: Iterable,
    *,
    config: int | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    n_bins: int = N_BINS,
    reliability_png: str | Path | None = None,
    progress=None,
    total: int | None = None,
) -> CalibrationReport:
    """Accuracy, ECE and AdaECE per output step of ``model`` (eval mode, no grad).

    For ``flexsnn eval --calibration``: the same batches as
    :func:`flexsnn.training.evaluate.accuracy`.

    Args:
        model: a TFSNN (or any module ``[T, B, C, H, W] -> [T_out, B, K]``).
        batches: ``(x float [B, T, C, H, W], y int64 [B])`` pairs (``frame_loader`` output).
        config: uniform T (int) or per-stage tuple applied before running (left applied).
        device: where to run (default: the model's parameters' device).
        n_bins: bins of ECE / AdaECE (default 15).
        reliability_png: when given, also write a reliability diagram (first, middle, last step).
        progress: optional :class:`flexsnn.progress.ProgressFactory`; ``total``: its length.
    """
    from flexsnn.data.frames import to_time_major
    from flexsnn.progress import null_progress

    if config is not None:
        if isinstance(config, int):
            model.set_uniform(int(config))
        else:
            model.set_temporal_config(tuple(int(t) for t in config))
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    acc = CalibrationAccumulator(n_bins=n_bins)
    bar = (progress or null_progress)(total=total, desc="calibration")
    try:
        with torch.no_grad():
            for xb, yb in batches:
                logits = model(to_time_major(xb).to(device))
                acc.update(logits, yb)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    report = acc.report()
    if reliability_png is not None:
        conf, correct = acc.arrays()
        save_reliability_diagram(reliability_png, conf, correct, n_bins=n_bins)
    return report
