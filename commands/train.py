"""``flexsnn train``, ``eval``, ``calibrate-bn`` and ``search``: the training side of the CLI.

Each command parses options, resolves the configuration (defaults < --config file < command
line), calls the library (:mod:`flexsnn.training`) and prints a short report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

TRAIN_HELP = """Train a temporally flexible SNN (SDT, NMT or MTT) and write checkpoints.

Writes into --out: last.safetensors (+ .json) every epoch, state.safetensors (resume state),
final.safetensors (BN-calibrated when the model has BN and the scheme mixes T), metrics.jsonl,
metrics.csv and config.json (resolved config + version + git hash). Settings: defaults <
--config FILE (JSON with TrainConfig fields, "scheme" nested) < command-line options.

\b
Examples:
  flexsnn train --scheme sdt --T 10 --epochs 5 --out runs/sdt
  flexsnn train --scheme mtt --T 10 --t-min 1 --s 3 --epochs 5 --out runs/mtt
  flexsnn train --scheme mtt --limit 500 --epochs 1 --out runs/quick
  flexsnn train --config mtt.json --lr 0.002 --out runs/mtt2
  flexsnn train --resume --out runs/mtt            # continue an interrupted run
  flexsnn train --model-kwargs '{"batch_norm": true}' --scheme sdt --out runs/bn
  flexsnn train --event-augment drop,noise,hot --out runs/aug     # see benchmarks/sim_to_real.py
  flexsnn train --phase bias_removal --init-checkpoint runs/bn/final.safetensors \\
      --scheme mtt --epochs 2 --out runs/chip      # fold BN, fine-tune without biases
"""

EVAL_HELP = """Accuracy of one or two checkpoints at uniform T values and temporal configurations.

Recordings are binned into as many frames as the input stage's T. Prints a table, writes
eval.json and accuracy.png (one curve per checkpoint, e.g. SDT vs MTT) into --out.

\b
Examples:
  flexsnn eval --checkpoint runs/mtt/final.safetensors --T 1-10
  flexsnn eval --checkpoint runs/sdt/final.safetensors --checkpoint runs/mtt/final.safetensors
  flexsnn eval --checkpoint runs/mtt/final.safetensors --config 10,4,2,2 --config 10,10,5,5
"""

CALIBRATE_HELP = """Re-estimate BatchNorm statistics at T_max (cumulative average, ~10 batches).

With --remove-biases it also runs the bias-removal step of the Speck pipeline: zero biases and
BN means, fold BN scales into the weights and write a model without BN (fine-tune it with
`flexsnn train --phase bias_removal`, which does this itself).

\b
Examples:
  flexsnn calibrate-bn --checkpoint runs/mtt/final.safetensors --out runs/mtt/calibrated.safetensors
  flexsnn calibrate-bn --checkpoint runs/bn/final.safetensors --batches 20 --config 10,10,10,10
  flexsnn calibrate-bn --checkpoint runs/bn/final.safetensors --remove-biases --out runs/bn/nobn.safetensors
"""

SEARCH_HELP = """Estimate accuracy over temporal configurations and search the best one under an energy budget.

Measures N sampled configurations, fits acc = sum_i K_i sqrt(log2 t_i) + c, reports R2/MAE on
held-out configurations, measures stage firing rates R_i at T_max, and searches (DFS) the
configuration with the best estimated accuracy whose energy sum_i t_i R_i does not exceed that
of uniform --budget-T; then measures it. Writes search.json into --out.

\b
Examples:
  flexsnn search --checkpoint runs/mtt/final.safetensors --budget-T 3
  flexsnn search --checkpoint runs/mtt/final.safetensors --n-fit 18 --n-holdout 10 --limit 300
"""


# ----------------------------------------------------------------------------- helpers
def parse_int_list(text: str, *, field: str) -> list[int]:
    """``"1-10"``, ``"1,2,4"`` or ``"1-3,8"`` -> list of ints (ConfigError when malformed)."""
    from flexsnn.errors import ConfigError

    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError as err:
        raise ConfigError(field, text, "integers like 1-10 or 1,2,4") from err
    if not out or min(out) < 1:
        raise ConfigError(field, text, "one or more integers >= 1")
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    from flexsnn.errors import ConfigError

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError("--config", str(path), "a readable JSON file", str(err)) from err
    if isinstance(raw, dict) and "config" in raw and "flexsnn_version" in raw:
        raw = raw["config"]  # a config.json written by a previous run
    if not isinstance(raw, dict):
        raise ConfigError("--config", str(path), "a JSON object of TrainConfig fields")
    return raw


def resolve_train_config(file: Optional[Path], cli: dict[str, Any], scheme_cli: dict[str, Any]):
    """defaults < config file < command line (``None`` = not given) -> TrainConfig."""
    from flexsnn.training.trainer import TrainConfig

    merged = TrainConfig().to_dict()
    if file is not None:
        raw = _read_config_file(file)
        scheme_raw = raw.pop("scheme", {}) or {}
        merged.update(raw)
        merged["scheme"] = {**merged["scheme"], **scheme_raw}
    merged.update({k: v for k, v in cli.items() if v is not None})
    merged["scheme"] = {**merged["scheme"], **{k: v for k, v in scheme_cli.items() if v is not None}}
    merged["scheme"]["T"] = merged["T"]
    return TrainConfig.from_dict(merged)


def _load(checkpoint: Path):
    from flexsnn.models.checkpoint import load_model

    model, meta = load_model(checkpoint)
    model.eval()
    return model, meta


def _data_T(meta) -> int:
    return int(meta.extra.get("train_config", {}).get("T", meta.t_range[1]))


# ----------------------------------------------------------------------------- commands
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of TrainConfig fields."),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model (default speck3c1fc)."),
    model_kwargs: Optional[str] = typer.Option(None, "--model-kwargs", help="JSON object of model arguments."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="saccade-mnist or nmnist."),
    root: Optional[Path] = typer.Option(None, "--root", help="N-MNIST folder."),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="sdt, nmt or mtt."),
    T: Optional[int] = typer.Option(None, "--T", help="Time bins of the data (default 10)."),
    t_min: Optional[int] = typer.Option(None, "--t-min", help="Smallest stage T (default 1)."),
    t_max: Optional[int] = typer.Option(None, "--t-max", help="Largest stage T (default T)."),
    s: Optional[int] = typer.Option(None, "--s", help="Configurations per step, NMT/MTT (default 3)."),
    r_left: Optional[int] = typer.Option(None, "--r-left", help="Event data: stages from T-r_left ..."),
    r_right: Optional[int] = typer.Option(None, "--r-right", help="... to T+r_right."),
    non_increasing: Optional[bool] = typer.Option(None, "--non-increasing/--any-order",
                                                  help="Only non-increasing T along the stages."),
    data_kind: Optional[str] = typer.Option(None, "--data-kind", help="event (default) or static."),
    loss: Optional[str] = typer.Option(None, "--loss", help="ce, tet or tmc."),
    backprop: Optional[str] = typer.Option(None, "--backprop", help="bptt, rate (= rate_M) or rate_S (rate-based, memory flat in T)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd or adamw."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (cosine to 0)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N samples only."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Test on N samples only."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
    event_augment: Optional[str] = typer.Option(
        None, "--event-augment", help="Event-level augmentations against the generated-to-real "
        "gap, comma-separated: drop (events), jitter (time), skew (time), spatial (x/y jitter), "
        "noise (uniform events), hot (hot pixels), or all; e.g. drop,jitter,hot. Each recording is "
        "augmented before binning, with strengths drawn per sample (see data/event_augment.py)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    phase: Optional[str] = typer.Option(None, "--phase", help="train or bias_removal."),
    init_checkpoint: Optional[Path] = typer.Option(None, "--init-checkpoint", help="Start from these weights."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Output folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
) -> None:
    """Train a model; see the examples above."""
    from flexsnn.errors import ConfigError
    from flexsnn.progress import tqdm_progress
    from flexsnn.training.trainer import train

    kwargs = None
    if model_kwargs is not None:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as err:
            raise ConfigError("--model-kwargs", model_kwargs, "a JSON object") from err
    cli = dict(model=model, model_kwargs=kwargs, dataset=dataset, root=str(root) if root else None, T=T,
               loss=loss, backprop=backprop, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
               epochs=epochs, batch_size=batch_size, seed=seed, limit=limit, test_limit=test_limit,
               augment=augment, event_augment=event_augment, device=device, phase=phase,
               init_checkpoint=str(init_checkpoint) if init_checkpoint else None)
    scheme_cli = dict(name=scheme, t_min=t_min, t_max=t_max, s=s, r_left=r_left, r_right=r_right,
                      non_increasing=non_increasing, data_kind=data_kind)
    if resume and config is None and (out / "config.json").is_file():
        config = out / "config.json"  # the interrupted run's resolved settings
    cfg = resolve_train_config(config, cli, scheme_cli)
    # -- distributed (flexsnn.training.distributed): under torchrun every rank trains, rank 0 writes/prints --
    from flexsnn.training.distributed import training_session

    with training_session(device=cfg.device) as context:
        res = train(cfg, out_dir=out, resume=resume, progress=tqdm_progress, context=context)
    if not context.is_main:
        return
    for row in res.history:
        typer.echo("epoch {epoch}: loss {train_loss:.4f}  train acc {train_acc:.4f}".format(**row)
                   + (f"  test acc {row['test_acc']:.4f}" if "test_acc" in row else ""))
    if "test_acc" in res.metrics:
        typer.echo(f"final test accuracy at T={cfg.T}: {res.metrics['test_acc']:.4f}")
    typer.echo(f"wrote {res.final_path}")


def eval_cmd(
    checkpoint: list[Path] = typer.Option(..., "--checkpoint", "-c", help="Checkpoint(s); give up to two."),
    T: str = typer.Option("1-10", "--T", help="Uniform T values, e.g. 1-10 or 1,2,4,8."),
    config: Optional[list[str]] = typer.Option(None, "--config", help="Temporal configuration t1,t2,... (repeatable)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Default: the checkpoint's dataset."),
    root: Optional[Path] = typer.Option(None, "--root", help="N-MNIST folder."),
    split: str = typer.Option("test", "--split"),
    seed: int = typer.Option(0, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate N samples only."),
    batch_size: int = typer.Option(64, "--batch-size"),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder."),
    early_exit: Optional[str] = typer.Option(  # issue 10 (training/early_exit.py)
        None, "--early-exit", help="Also run early-exit inference (SEENN-I) at T_max = the largest "
        "--T: comma-separated confidence thresholds, e.g. 0.5,0.9,0.99; writes early_exit.json/png."),
    calibration: bool = typer.Option(  # issue 4 (training/calibration_metrics.py)
        False, "--calibration", help="Also report accuracy, ECE and AdaECE (15 bins) of the cumulative-mean "
        "prediction at every step t of T_max = the largest --T; writes calibration.json and "
        "reliability_<label>.png."),
) -> None:
    """Evaluate checkpoints at several T; see the examples above."""
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.errors import ConfigError
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.progress import tqdm_progress
    from flexsnn.training.evaluate import (FrameCache, accuracy_per_config, accuracy_per_T, format_table,
                                           plot_accuracy_curves)

    if len(checkpoint) > 2:
        raise ConfigError("--checkpoint", [str(c) for c in checkpoint], "one or two checkpoints")
    Ts = parse_int_list(T, field="--T")
    configs = [tuple(parse_int_list(c, field="--config")) for c in (config or [])]
    loaded = [(_load(c), c) for c in checkpoint]
    name = dataset or loaded[0][0][1].dataset or "saccade-mnist"
    ds = load_event_dataset(name, split=split, root=root, seed=seed, limit=limit)
    cache = FrameCache(ds)
    curves: dict[str, dict[int, float]] = {}
    report: dict[str, Any] = {"dataset": name, "split": split, "samples": len(ds), "T": Ts, "checkpoints": {}}
    for (model, meta), path in loaded:
        label = meta.scheme.get("name", path.stem) if meta.scheme else path.stem
        if label in curves:
            label = f"{label} ({path.parent.name}/{path.stem})"
        curves[label] = accuracy_per_T(model, cache, Ts, batch_size=batch_size, progress=tqdm_progress)
        entry: dict[str, Any] = {"path": str(path), "accuracy_per_T": curves[label]}
        if configs:
            accs = accuracy_per_config(model, cache, configs, batch_size=batch_size, progress=tqdm_progress)
            entry["configs"] = [{"config": list(c), "accuracy": a} for c, a in zip(configs, accs)]
        report["checkpoints"][label] = entry
    typer.echo(format_table(curves))
    for label, entry in report["checkpoints"].items():
        for row in entry.get("configs", []):
            typer.echo(f"{label} config {tuple(row['config'])}: {100 * row['accuracy']:.2f}%")
    out.mkdir(parents=True, exist_ok=True)
    report["provenance"] = provenance({"checkpoint": [str(c) for c in checkpoint], "T": Ts,
                                       "config": [list(c) for c in configs], "dataset": name,
                                       "split": split, "seed": seed, "limit": limit})
    atomic_write_json(out / "eval.json", report)
    plot_accuracy_curves(curves, out / "accuracy.png", title=f"accuracy vs T ({name})")
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'accuracy.png'}")
    if early_exit:  # issue 10: the same run as `flexsnn analyze early-exit`
        from flexsnn.commands.analyze import echo_early_exit, parse_floats, run_early_exit

        ee = run_early_exit(checkpoint, dataset=name, root=root, split=split, seed=seed, limit=limit,
                            T=max(Ts), thresholds=parse_floats(early_exit, option="--early-exit"),
                            batch_size=batch_size, out=out, progress=tqdm_progress)
        echo_early_exit(ee)
        typer.echo(f"wrote {out / 'early_exit.json'} and {out / 'early_exit.png'}")
    if calibration:  # issue 4: per-step accuracy / ECE / AdaECE at T_max
        _eval_calibration(loaded, cache, T=max(Ts), batch_size=batch_size, out=out)


def _eval_calibration(loaded: list, cache: Any, *, T: int, batch_size: int, out: Path) -> None:
    """``eval --calibration``: per-step calibration of each checkpoint at uniform ``T`` (issue 4)."""
    import re

    from flexsnn.io_utils import atomic_write_json
    from flexsnn.progress import tqdm_progress
    from flexsnn.training.calibration_metrics import evaluate_calibration

    result: dict[str, Any] = {"T": T, "bins": 15, "checkpoints": {}}
    for (model, meta), path in loaded:
        label = meta.scheme.get("name", path.stem) if meta.scheme else path.stem
        if label in result["checkpoints"]:
            label = f"{label} ({path.parent.name}/{path.stem})"
        png = out / f"reliability_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png"
        loader = cache.loader(T, batch_size)
        rep = evaluate_calibration(model, loader, config=T, reliability_png=png, progress=tqdm_progress,
                                   total=len(loader))
        result["checkpoints"][label] = {"path": str(path), **rep.to_dict(), "reliability_png": str(png)}
        typer.echo(f"{label} calibration at T={T} (t: accuracy / ECE / AdaECE):")
        for t, (a, e, ae) in enumerate(zip(rep.accuracy_per_t, rep.ece_per_t, rep.adaece_per_t), 1):
            typer.echo(f"  t={t:3d}  {a:.4f} / {e:.4f} / {ae:.4f}")
    atomic_write_json(out / "calibration.json", result)
    typer.echo(f"wrote {out / 'calibration.json'}")


def calibrate_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .safetensors (default: <checkpoint>-calibrated)."),
    config: Optional[str] = typer.Option(None, "--config", help="Configuration to calibrate at (default T_max)."),
    batches: int = typer.Option(10, "--batches", help="Training batches to average over."),
    batch_size: int = typer.Option(32, "--batch-size"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, "--root"),
    seed: int = typer.Option(0, "--seed"),
    remove_biases_: bool = typer.Option(False, "--remove-biases", help="Also fold BN and drop biases."),
) -> None:
    """Calibrate BN statistics of a checkpoint; see the examples above."""
    from dataclasses import replace

    from flexsnn.data.frames import frame_loader
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.errors import ConfigError
    from flexsnn.models.checkpoint import save_checkpoint
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import calibrate_bn, has_batch_norm, remove_biases
    from flexsnn.training.schemes import SchemeConfig

    model, meta = _load(checkpoint)
    if not has_batch_norm(model):
        raise ConfigError("--checkpoint", str(checkpoint), "a model with BatchNorm layers",
                          "this model has none; nothing to calibrate")
    if config is not None:
        cfg = tuple(parse_int_list(config, field="--config"))
    else:
        cfg = SchemeConfig(**meta.scheme).max_config(model.num_stages) if meta.scheme else (meta.t_range[1],) * model.num_stages
    name = dataset or meta.dataset or "saccade-mnist"
    ds = load_event_dataset(name, split="train", root=root, seed=seed, limit=batches * batch_size)
    loader = frame_loader(ds, T=cfg[0], batch_size=batch_size, shuffle=True, seed=seed)
    used = calibrate_bn(model, loader, config=cfg, n_batches=batches)
    extra = dict(meta.extra, calibrated=True, calibration={"config": list(cfg), "batches": used})
    kwargs = meta.model_kwargs
    if remove_biases_:
        kwargs = dict(meta.model_kwargs, batch_norm=False)
        model = remove_biases(model, rebuild=lambda: build_model(meta.model_name, **kwargs))
        extra["bias_removed"] = True
    target = out or checkpoint.with_name(checkpoint.stem + ("-nobn" if remove_biases_ else "-calibrated") + ".safetensors")
    save_checkpoint(target, model, replace(meta, model_kwargs=kwargs, extra=extra))
    typer.echo(f"calibrated {used} batches at {cfg}; wrote {target}")


def search_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c"),
    budget_T: int = typer.Option(3, "--budget-T", help="Energy budget = that of uniform T."),
    n_fit: int = typer.Option(18, "--n-fit", help="Configurations to fit on."),
    n_holdout: int = typer.Option(10, "--n-holdout", help="Held-out configurations."),
    t_min: int = typer.Option(1, "--t-min"),
    t_max: Optional[int] = typer.Option(None, "--t-max", help="Default: the checkpoint's T_max."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, "--root"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Test samples used per measurement."),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/search"), "--out"),
) -> None:
    """Fit the accuracy model and search configurations; see the examples above."""
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.training.evaluate import FrameCache, accuracy_per_config, firing_rates
    from flexsnn.training.search import run_search

    model, meta = _load(checkpoint)
    hi = t_max or int(meta.t_range[1])
    name = dataset or meta.dataset or "saccade-mnist"
    ds = load_event_dataset(name, split="test", root=root, seed=seed, limit=limit)
    cache = FrameCache(ds)
    rates = firing_rates(model, cache, hi, batch_size=batch_size)
    ranges = [(t_min, hi)] * model.num_stages
    rep = run_search(lambda c: accuracy_per_config(model, cache, [c], batch_size=batch_size)[0], rates, ranges,
                     budget_T=budget_T, n_fit=n_fit, n_holdout=n_holdout, seed=seed)
    doc = rep.to_dict()
    doc["stages"] = list(model.stage_names)
    doc["provenance"] = provenance({"checkpoint": str(checkpoint), "budget_T": budget_T, "n_fit": n_fit,
                                    "n_holdout": n_holdout, "t_min": t_min, "t_max": hi, "dataset": name,
                                    "limit": limit, "seed": seed})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "search.json", doc)
    q, h = rep.fit_quality_train, rep.fit_quality_holdout
    typer.echo(f"K = {[round(k, 4) for k in rep.model.K]}  c = {rep.model.c:.4f}")
    typer.echo(f"fit: R2 {q.r2:.3f} MAE {q.mae:.4f} (n={q.n})"
               + (f"; held out: R2 {h.r2:.3f} MAE {h.mae:.4f} (n={h.n})" if h else ""))
    typer.echo(f"firing rates at T={hi}: {[round(r, 4) for r in rates]}")
    typer.echo(f"budget (uniform T={budget_T}): {rep.budget:.4f}")
    typer.echo(f"found {rep.result.config}: estimated {rep.result.estimated_accuracy:.4f}, "
               f"measured {rep.found_accuracy:.4f}, energy {rep.result.energy:.4f}")
    typer.echo(f"baseline {rep.baseline_config}: measured {rep.baseline_accuracy:.4f}")
    typer.echo(f"wrote {out / 'search.json'}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``eval``, ``calibrate-bn`` and ``search`` to the app."""
    app.command("train", help=TRAIN_HELP)(train_cmd)
    app.command("eval", help=EVAL_HELP)(eval_cmd)
    app.command("calibrate-bn", help=CALIBRATE_HELP)(calibrate_cmd)
    app.command("search", help=SEARCH_HELP)(search_cmd)
