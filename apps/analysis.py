"""The MTT paper's analyses beyond accuracy at a fixed T (seed §5.2, §5.3, A.11) as library
runs: noise robustness, gradient norms, early exit (SEENN-I) and the asynchronous simulator's
early stop. Each writes JSON and a PNG into an output folder and returns the JSON dict; the
``format_*`` functions give the tables the commands print.

Used by ``flexsnn analyze``, by the ``--early-exit`` options of ``flexsnn eval`` /
``flexsnn simulate`` and by the benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from flexsnn.apps.analysis_plots import _plt, _save, plot_early_exit, plot_early_stop, plot_noise_curves

def default_T(model, meta) -> int:
    """The checkpoint's ``T_max`` (its trained range), else the model's largest stage T."""
    t_range = tuple(getattr(meta, "t_range", ()) or ())
    if len(t_range) == 2 and int(t_range[1]) > 1:
        return int(t_range[1])
    return int(max(model.temporal_config))


def checkpoint_batches(dataset: str, *, split: str, T: int, root: Optional[Path] = None, seed: int = 0,
                       limit: Optional[int] = None, batch_size: int = 64) -> list:
    """Materialized loader batches ``(x [B, T, C, H, W], y [B])`` of a dataset at ``T`` bins.

    ``seqmnist``: ``T`` must be a sequence length (28 = row per step, 784 / pixels).
    """
    from flexsnn.errors import ConfigError

    if dataset == "seqmnist":
        from flexsnn.data.seqmnist import IMAGE_PIXELS, seqmnist_loader

        if IMAGE_PIXELS % T:
            raise ConfigError("--T", T, "a sequence length dividing 784 for seqmnist (28 = one row per step)")
        return list(seqmnist_loader(split, batch_size=batch_size, seed=seed, limit=limit,
                                    pixels_per_step=IMAGE_PIXELS // T))
    from flexsnn.data.frames import frame_loader
    from flexsnn.data.registry import load_event_dataset

    ds = load_event_dataset(dataset, split=split, root=root, seed=seed, limit=limit)
    return list(frame_loader(ds, T=T, batch_size=batch_size, shuffle=False))


def _labels(checkpoints: Sequence[Path], labels: Optional[Sequence[str]]) -> list[str]:
    from flexsnn.errors import ConfigError

    if labels:
        if len(labels) != len(checkpoints):
            raise ConfigError("--label", list(labels), f"{len(checkpoints)} labels, one per --checkpoint")
        return list(labels)
    return [Path(c).stem for c in checkpoints]


def _load_ckpts(checkpoints: Sequence[Path], labels: Optional[Sequence[str]]):
    from flexsnn.models.checkpoint import load_model

    return [(name, *load_model(path)) for name, path in zip(_labels(checkpoints, labels), checkpoints)]


# --------------------------------------------------------------------------- library-level runs
def run_robustness(checkpoints: Sequence[Path], *, labels: Optional[Sequence[str]] = None,
                   dataset: str = "saccade-mnist", root: Optional[Path] = None, split: str = "test",
                   seed: int = 0, limit: Optional[int] = None, T: Optional[int] = None,
                   sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3), input_sigmas: Optional[Sequence[float]] = None,
                   repeats: int = 5, scale: str = "absolute", batch_size: int = 64, out: Path = Path("analysis"),
                   progress=None) -> dict:
    """Weight- and input-noise sweeps for each checkpoint; writes ``robustness.json``,
    ``robustness_weight.png`` and ``robustness_input.png`` into ``out``. Returns the JSON dict."""
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.training.robustness import noise_sweep

    out = Path(out)
    input_sigmas = list(sigmas if input_sigmas is None else input_sigmas)
    result: dict[str, Any] = {"sigma": list(sigmas), "input_sigma": input_sigmas, "repeats": repeats,
                              "scale": scale, "dataset": dataset, "split": split}
    weight_curves, input_curves = {}, {}
    for name, model, meta in _load_ckpts(checkpoints, labels):
        t = int(T or default_T(model, meta))
        batches = checkpoint_batches(dataset, split=split, T=t, root=root, seed=seed, limit=limit,
                                     batch_size=batch_size)
        w = noise_sweep(model, batches, sigmas, kind="weight", repeats=repeats, seed=seed, scale=scale, T=t,
                        progress=progress)
        x = noise_sweep(model, batches, input_sigmas, kind="input", repeats=repeats, seed=seed, T=t,
                        progress=progress)
        weight_curves[name], input_curves[name] = w, x
        result[name] = {"T": t, "clean_accuracy": w.clean, "weight_noise": w.to_dict(), "input_noise": x.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    plot_noise_curves(weight_curves, out / "robustness_weight.png", title=f"Gaussian noise in the weights ({scale})")
    plot_noise_curves(input_curves, out / "robustness_input.png", title="Gaussian noise in the inputs")
    result.update(provenance({"checkpoints": [str(c) for c in checkpoints], "labels": list(weight_curves)}))
    atomic_write_json(out / "robustness.json", result)
    return result


def run_gradients(checkpoints: Sequence[Path], *, labels: Optional[Sequence[str]] = None,
                  dataset: str = "saccade-mnist", root: Optional[Path] = None, split: str = "train",
                  seed: int = 0, limit: Optional[int] = None, T: Optional[int] = None, layers: str = "conv",
                  batch_size: int = 64, out: Path = Path("analysis"), progress=None) -> dict:
    """``||dL/dW||`` (conv layers, whole split) and mean ``||dL/dx||`` per checkpoint; writes
    ``gradients.json`` and ``gradients.png``."""
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.training.robustness import gradient_norms

    out = Path(out)
    result: dict[str, Any] = {"dataset": dataset, "split": split, "layers": layers}
    for name, model, meta in _load_ckpts(checkpoints, labels):
        t = int(T or default_T(model, meta))
        batches = checkpoint_batches(dataset, split=split, T=t, root=root, seed=seed, limit=limit,
                                     batch_size=batch_size)
        g = gradient_norms(model, batches, layers=layers, T=t, progress=progress)
        result[name] = {"T": t, **g.to_dict()}
    names = [k for k in result if isinstance(result[k], dict) and "grad_norm_w" in result[k]]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.0))
    for ax, key, title in zip(axes, ("grad_norm_w", "grad_norm_x"), ("||dL/dW|| (conv)", "mean ||dL/dx_i||")):
        ax.bar(names, [result[n][key] for n in names], color=["C0", "C1", "C2", "C3"][:len(names)])
        ax.set_title(title, fontsize=9)
    out.mkdir(parents=True, exist_ok=True)
    _save(fig, out / "gradients.png")
    result.update(provenance({"checkpoints": [str(c) for c in checkpoints], "labels": names}))
    atomic_write_json(out / "gradients.json", result)
    return result


def run_early_exit(checkpoints: Sequence[Path], *, labels: Optional[Sequence[str]] = None,
                   dataset: str = "saccade-mnist", root: Optional[Path] = None, split: str = "test",
                   seed: int = 0, limit: Optional[int] = None, T: Optional[int] = None,
                   thresholds: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01),
                   batch_size: int = 64, out: Path = Path("analysis"), progress=None) -> dict:
    """Early-exit sweep (accuracy vs mean time steps) per checkpoint; writes ``early_exit.json``
    and ``early_exit.png``."""
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.training.early_exit import collect_cumulative_logits, early_exit_sweep

    out = Path(out)
    result: dict[str, Any] = {"thresholds": list(thresholds), "dataset": dataset, "split": split}
    curves = {}
    for name, model, meta in _load_ckpts(checkpoints, labels):
        t = int(T or default_T(model, meta))
        batches = checkpoint_batches(dataset, split=split, T=t, root=root, seed=seed, limit=limit,
                                     batch_size=batch_size)
        cum, y = collect_cumulative_logits(model, batches, T_max=t, progress=progress, total=len(batches))
        pts = early_exit_sweep(cum, y, thresholds)
        curves[name] = pts
        result[name] = {"T_max": t, "accuracy": [p.accuracy for p in pts], "mean_T": [p.mean_T for p in pts],
                        "points": [p.to_dict() for p in pts]}
    out.mkdir(parents=True, exist_ok=True)
    plot_early_exit(curves, out / "early_exit.png")
    result.update(provenance({"checkpoints": [str(c) for c in checkpoints], "labels": list(curves)}))
    atomic_write_json(out / "early_exit.json", result)
    return result


def early_stop_entry(backend, dataset, ks: Sequence[int], *, limit: Optional[int] = None, progress=None) -> tuple[dict, list]:
    """Early-stop sweep of one loaded backend: ``(json entry, points)``."""
    from flexsnn.deploy.early_exit import early_stop_sweep

    pts, full = early_stop_sweep(backend, dataset, ks, limit=limit, progress=progress)
    entry = {"full": full, "k": [p.k for p in pts], "accuracy": [p.accuracy for p in pts],
             "fraction_of_duration": [p.fraction_of_duration for p in pts],
             "fraction_of_events": [p.fraction_of_events for p in pts],
             "synops_fraction": [p.synops_fraction for p in pts],
             "points": [p.to_dict() for p in pts]}
    return entry, pts


def write_early_stop(entries: dict[str, tuple[dict, list]], out: Path, *, ks: Sequence[int], config: dict,
                     extra: Optional[dict] = None) -> dict:
    """Write ``early_stop.json`` and ``early_stop.png`` for ``{label: (entry, points)}``."""
    from flexsnn.io_utils import atomic_write_json, provenance

    out = Path(out)
    result: dict[str, Any] = {"k": list(ks), **(extra or {})}
    for name, (entry, _) in entries.items():
        result[name] = entry
    out.mkdir(parents=True, exist_ok=True)
    plot_early_stop({n: pts for n, (_, pts) in entries.items()}, out / "early_stop.png")
    result.update(provenance({**config, "labels": list(entries)}))
    atomic_write_json(out / "early_stop.json", result)
    return result


def run_early_stop(chips: Sequence[Path], *, labels: Optional[Sequence[str]] = None,
                   dataset: str = "saccade-mnist", root: Optional[Path] = None, split: str = "test",
                   seed: int = 0, limit: Optional[int] = None, ks: Sequence[int] = (1, 2, 3, 4, 6, 8, 12),
                   out: Path = Path("analysis"), progress=None) -> dict:
    """Simulator early-stop sweep over ``ks`` per chip image; writes ``early_stop.json`` and
    ``early_stop.png``."""
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.deploy.async_sim import AsyncSimulator

    ds = load_event_dataset(dataset, split=split, root=root, seed=seed, limit=limit)
    entries = {}
    for name, chip in zip(_labels(chips, labels), chips):
        sim = AsyncSimulator()
        sim.load(ChipImage.load(chip))
        entries[name] = early_stop_entry(sim, ds, ks, progress=progress)
    return write_early_stop(entries, out, ks=ks, config={"chips": [str(c) for c in chips]},
                            extra={"dataset": dataset, "split": split})


def format_early_exit(res: dict) -> str:
    """The early-exit table of :func:`run_early_exit`'s result (one block per checkpoint)."""
    lines = []
    for name in res["config"]["labels"]:
        r = res[name]
        lines += [f"{name} (T_max={r['T_max']})", "  threshold  accuracy  mean_T"]
        lines += [f"  {th:9.3f}  {acc:8.4f}  {mt:6.2f}"
                  for th, acc, mt in zip(res["thresholds"], r["accuracy"], r["mean_T"])]
    return "\n".join(lines)


def format_early_stop(res: dict) -> str:
    """The early-stop table of :func:`run_early_stop`'s result (one block per chip image)."""
    lines = []
    for name in res["config"]["labels"]:
        r = res[name]
        lines += [f"{name}: full run accuracy {r['full']['accuracy']:.4f}",
                  "     k  accuracy  duration  events  synops"]
        lines += [f"  {kk:4d}  {r['accuracy'][i]:8.4f}  {r['fraction_of_duration'][i]:8.3f}  "
                  f"{r['fraction_of_events'][i]:6.3f}  {r['synops_fraction'][i]:6.3f}"
                  for i, kk in enumerate(r["k"])]
    return "\n".join(lines)
