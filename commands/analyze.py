"""``flexsnn analyze robustness | gradients | early-exit | early-stop``: the MTT paper's
analyses beyond accuracy at a fixed T (seed §5.2, §5.3, A.11), each writing JSON and a PNG.

The plotting and data helpers here (:func:`plot_noise_curves`, :func:`plot_early_exit`,
:func:`plot_early_stop`, :func:`checkpoint_batches`) are reused by the benchmarks and by the
``--early-exit`` options of ``flexsnn eval`` / ``flexsnn simulate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import typer

ANALYZE_HELP = """Analyses of trained checkpoints: robustness to noise, gradient norms, early exit.

\b
Examples:
  flexsnn analyze robustness --checkpoint sdt.safetensors --checkpoint mtt.safetensors --out rob/
  flexsnn analyze gradients --checkpoint sdt.safetensors --checkpoint mtt.safetensors --out grad/
  flexsnn analyze early-exit --checkpoint mtt.safetensors --thresholds 0.5,0.9,0.99 --out ee/
  flexsnn analyze early-stop --chip mtt.chip --k 1,2,4,8 --out es/
"""

_CKPT = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (.safetensors); repeat to compare (e.g. SDT and MTT).")
_LABEL = typer.Option(None, "--label", help="Name per checkpoint (default: the file stem); repeat in order.")
_DATASET = typer.Option("saccade-mnist", "--dataset", "-d", help="saccade-mnist, nmnist or seqmnist.")
_ROOT = typer.Option(None, "--root", help="N-MNIST folder (nmnist only).")
_SEED = typer.Option(0, "--seed", help="Split seed and noise seed.")
_LIMIT = typer.Option(None, "--limit", help="Use at most this many samples (class-balanced).")
_T = typer.Option(None, "--T", help="Time steps (frames) to run at; default: the checkpoint's T_max.")
_BATCH = typer.Option(64, "--batch-size", help="Batch size.")
_OUT = typer.Option(Path("analysis"), "--out", help="Output folder (JSON + PNG).")


# --------------------------------------------------------------------------- helpers
def parse_floats(text: str, *, option: str) -> list[float]:
    """``"0,0.1,0.2"`` -> ``[0.0, 0.1, 0.2]`` (ConfigError naming ``option`` otherwise)."""
    from flexsnn.errors import ConfigError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(option, text, "comma-separated numbers, e.g. 0,0.05,0.1") from err
    if not values:
        raise ConfigError(option, text, "at least one number")
    return values


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


# --------------------------------------------------------------------------- commands
def robustness(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
               root: Optional[Path] = _ROOT, split: str = typer.Option("test", "--split", help="Split to test on."),
               seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
               sigma: str = typer.Option("0,0.05,0.1,0.2,0.3", "--sigma", help="Weight-noise sigmas, comma-separated."),
               input_sigma: Optional[str] = typer.Option(None, "--input-sigma",
                                                         help="Input-noise sigmas (default: --sigma)."),
               repeats: int = typer.Option(5, "--repeats", help="Noise draws per sigma (the paper: 5)."),
               scale: str = typer.Option("absolute", "--scale", help="Weight noise: absolute, or relative to "
                                         "each weight tensor's std."),
               batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Accuracy under Gaussian noise in the weights and, separately, in the inputs (mean, min, max).

    \b
    Example:
      flexsnn analyze robustness -c runs/sdt/final.safetensors -c runs/mtt/final.safetensors \\
          --label sdt --label mtt --sigma 0,0.1,0.2,0.4 --repeats 5 --limit 500 --out rob/
    """
    from flexsnn.progress import tqdm_progress

    res = run_robustness(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed,
                         limit=limit, T=T, sigmas=parse_floats(sigma, option="--sigma"),
                         input_sigmas=parse_floats(input_sigma, option="--input-sigma") if input_sigma else None,
                         repeats=repeats, scale=scale, batch_size=batch_size, out=out, progress=tqdm_progress)
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name} (T={r['T']}): clean {r['clean_accuracy']:.4f}")
        for kind in ("weight_noise", "input_noise"):
            c = r[kind]
            row = "  ".join(f"{s:g}:{m:.3f}[{lo:.3f},{hi:.3f}]" for s, m, lo, hi in
                            zip(c["sigma"], c["mean"], c["min"], c["max"]))
            typer.echo(f"  {kind}: {row}")
    typer.echo(f"wrote {Path(out) / 'robustness.json'} and PNGs")


def gradients(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
              root: Optional[Path] = _ROOT, split: str = typer.Option("train", "--split", help="Split (the paper: training set)."),
              seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
              layers: str = typer.Option("conv", "--layers", help="conv (the paper) or all (conv + linear)."),
              batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Gradient norms ||dL/dW|| (conv layers, over the split) and mean ||dL/dx_i|| (A.11).

    \b
    Example:
      flexsnn analyze gradients -c sdt.safetensors -c mtt.safetensors --label sdt --label mtt --out grad/
    """
    from flexsnn.progress import tqdm_progress

    res = run_gradients(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                        T=T, layers=layers, batch_size=batch_size, out=out, progress=tqdm_progress)
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name} (T={r['T']}, n={r['n']}): ||dL/dW|| = {r['grad_norm_w']:.4g}   "
                   f"mean ||dL/dx|| = {r['grad_norm_x']:.4g}")
    typer.echo(f"wrote {Path(out) / 'gradients.json'} and gradients.png")


def early_exit(checkpoint: list[Path] = _CKPT, label: Optional[list[str]] = _LABEL, dataset: str = _DATASET,
               root: Optional[Path] = _ROOT, split: str = typer.Option("test", "--split", help="Split to test on."),
               seed: int = _SEED, limit: Optional[int] = _LIMIT, T: Optional[int] = _T,
               thresholds: str = typer.Option("0,0.5,0.7,0.8,0.9,0.95,0.99,1.01", "--thresholds",
                                              help="Confidence thresholds (top softmax prob), comma-separated."),
               batch_size: int = _BATCH, out: Path = _OUT) -> None:
    """Early-exit inference (SEENN-I): accuracy vs mean time steps over a threshold sweep.

    \b
    Example:
      flexsnn analyze early-exit -c sdt.safetensors -c mtt.safetensors --T 10 --out ee/
    """
    from flexsnn.progress import tqdm_progress

    res = run_early_exit(checkpoint, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                         T=T, thresholds=parse_floats(thresholds, option="--thresholds"), batch_size=batch_size,
                         out=out, progress=tqdm_progress)
    echo_early_exit(res)
    typer.echo(f"wrote {Path(out) / 'early_exit.json'} and early_exit.png")


def echo_early_exit(res: dict) -> None:
    """Print the early-exit table of :func:`run_early_exit`'s result."""
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name} (T_max={r['T_max']})\n  threshold  accuracy  mean_T")
        for th, acc, mt in zip(res["thresholds"], r["accuracy"], r["mean_T"]):
            typer.echo(f"  {th:9.3f}  {acc:8.4f}  {mt:6.2f}")


def early_stop(chip: list[Path] = typer.Option(..., "--chip", help="ChipImage (.chip); repeat to compare."),
               label: Optional[list[str]] = _LABEL, dataset: str = _DATASET, root: Optional[Path] = _ROOT,
               split: str = typer.Option("test", "--split", help="Split to test on."), seed: int = _SEED,
               limit: Optional[int] = _LIMIT,
               k: str = typer.Option("1,2,3,4,6,8,12", "--k", help="Output spike-count margins, comma-separated."),
               out: Path = _OUT) -> None:
    """Async-simulator early stop: stop consuming events once the output margin reaches k.

    \b
    Example:
      flexsnn analyze early-stop --chip mtt.chip --k 1,2,4,8 --limit 200 --out es/
    """
    from flexsnn.progress import tqdm_progress

    ks = [int(v) for v in parse_floats(k, option="--k")]
    res = run_early_stop(chip, labels=label, dataset=dataset, root=root, split=split, seed=seed, limit=limit,
                         ks=ks, out=out, progress=tqdm_progress)
    echo_early_stop(res)
    typer.echo(f"wrote {Path(out) / 'early_stop.json'} and early_stop.png")


def echo_early_stop(res: dict) -> None:
    """Print the early-stop table of :func:`run_early_stop`'s result."""
    for name in res["config"]["labels"]:
        r = res[name]
        typer.echo(f"{name}: full run accuracy {r['full']['accuracy']:.4f}\n"
                   "     k  accuracy  duration  events  synops")
        for i, kk in enumerate(r["k"]):
            typer.echo(f"  {kk:4d}  {r['accuracy'][i]:8.4f}  {r['fraction_of_duration'][i]:8.3f}  "
                       f"{r['fraction_of_events'][i]:6.3f}  {r['synops_fraction'][i]:6.3f}")


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command group to the flexsnn app."""
    analyze_app = typer.Typer(help=ANALYZE_HELP, no_args_is_help=True, rich_markup_mode=None)
    analyze_app.command("robustness")(robustness)
    analyze_app.command("gradients")(gradients)
    analyze_app.command("early-exit")(early_exit)
    analyze_app.command("early-stop")(early_stop)
    app.add_typer(analyze_app, name="analyze")
