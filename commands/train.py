"""``flexsnn train``, ``eval``, ``calibrate-bn`` and ``search``: the training side of the CLI.

Each command parses options, resolves the configuration (defaults < --config file < command
line), calls the library (:mod:`flexsnn.training`) and prints a short report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from flexsnn.options import MAX_COUNT, MAX_SEED, MAX_T, in_range

TRAIN_HELP = """Train a temporally flexible SNN (SDT, NMT or MTT) and write checkpoints.

Writes into --out: last.safetensors (+ .json) every epoch, state.safetensors (resume state),
final.safetensors (BN-calibrated when the model has BN and the scheme mixes T), metrics.jsonl,
metrics.csv and config.json (resolved config + version + git hash). Each epoch is committed
through run.json, so a kill at any moment leaves a run that --resume continues; a folder that
holds a run needs --resume or --overwrite. Settings: defaults < --config FILE (JSON with
TrainConfig fields, "scheme" nested) < command-line options.

\b
Examples:
  flexsnn train --scheme sdt --T 10 --epochs 5 --out runs/sdt
  flexsnn train --scheme mtt --T 10 --t-min 1 --s 3 --epochs 5 --out runs/mtt
  flexsnn train --scheme mtt --limit 500 --epochs 1 --out runs/quick
  flexsnn train --config mtt.json --lr 0.002 --out runs/mtt2
  flexsnn train --dataset mnist --model convnet --model-kwargs '{"width": 8}' --T 4 \\
      --scheme mtt --epochs 3 --out runs/mnist        # static images, direct encoding
  flexsnn train --preset cifar10-resnet19 --root ~/data/cifar --device cuda --out runs/c10
  flexsnn train --resume --out runs/mtt            # continue an interrupted run
  flexsnn train --model-kwargs '{"batch_norm": true}' --scheme sdt --out runs/bn
  flexsnn train --event-augment drop,noise,hot --out runs/aug     # see benchmarks/sim_to_real.py
  flexsnn train --phase bias_removal --init-checkpoint runs/bn/final.safetensors \\
      --scheme mtt --epochs 2 --out runs/chip      # fold BN, fine-tune without biases
  flexsnn train --model-kwargs '{"batch_norm": true, "channels": [16, 32, 128]}' --out runs/bn16
  flexsnn train --phase bias_removal --init-checkpoint runs/bn16/final.safetensors \\
      --scheme mtt --synops-budget 2.5e6 --distill-from runs/bn16/final.safetensors --distill-weight 3 \\
      --deploy-min-v-mem -2 --out runs/chip2
      # the chip recipe (issue 15): then flexsnn export --threshold-scale 0=1.75
  flexsnn train --scheme mtt --t-input-range 1,100 --t-sampling log-uniform --r-right 90 ...
      # input and later stages' T drawn log-uniformly up to the chip's regime (~T=100)
  flexsnn train --phase bias_removal --init-checkpoint runs/bn/final.safetensors --scheme mtt \\
      --synops-budget 1.9e6 --deploy-min-v-mem -16 --chip-T 100 --out runs/chip3
      # the chip's configuration in every step (T=100, floor -16, rate_M), see README
"""

EVAL_HELP = """Accuracy of one or two checkpoints at uniform T values and temporal configurations.

Event data at a T other than the training T follow --t-protocol: `rebin` (default) bins the
whole recording into T frames (every event seen, as a time-binned chip run at that T); `prefix`
bins it into the training T frames and keeps the first T (the MTT paper's code; T above the
training T is refused). Prints a table, writes eval.json and accuracy.png (one curve per
checkpoint, e.g. SDT vs MTT) into --out.

\b
Examples:
  flexsnn eval --checkpoint runs/mtt/final.safetensors --T 1-10
  flexsnn eval --checkpoint runs/sdt/final.safetensors --checkpoint runs/mtt/final.safetensors
  flexsnn eval --checkpoint runs/mtt/final.safetensors --config 10,4,2,2 --config 10,10,5,5
  flexsnn eval --checkpoint runs/mtt/final.safetensors --T 1-10 --t-protocol prefix
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
of uniform --budget-T; then measures it. For a model with BatchNorm every measurement first
calibrates BN at that configuration (--bn-calibrations times on different training batches,
accuracies averaged, as the paper's A.3). Writes search.json into --out.

\b
Examples:
  flexsnn search --checkpoint runs/mtt/final.safetensors --budget-T 3
  flexsnn search --checkpoint runs/mtt/final.safetensors --n-fit 18 --n-holdout 10 --limit 300
"""


# ----------------------------------------------------------------------------- helpers
def parse_int_list(text: str, *, field: str, hi: int = MAX_T) -> list[int]:
    """``"1-10"``, ``"1,2,4"`` or ``"1-3,8"`` -> list of ints in ``1..hi`` (ConfigError when
    malformed or out of range; bounds are checked before a range is expanded)."""
    from flexsnn.errors import ConfigError

    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if b > hi:
                    raise ConfigError(field, text, f"integers in 1..{hi}", f"{b} is too large")
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(field, text, "integers like 1-10 or 1,2,4") from err
    if not out or min(out) < 1 or max(out) > hi:
        raise ConfigError(field, text, f"one or more integers in 1..{hi}")
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    from flexsnn.errors import ConfigError
    from flexsnn.fields import json_loads

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError("--config", str(path), "a readable JSON file", str(err)) from err
    raw = json_loads(data, path, config=True)
    if isinstance(raw, dict) and "config" in raw and "flexsnn_version" in raw:
        raw = raw["config"]  # a config.json written by a previous run
    if not isinstance(raw, dict):
        raise ConfigError("--config", str(path), "a JSON object of TrainConfig fields")
    return raw  # value types are checked by resolve_train_config (options.check_field_types)


def resolve_train_config(file: Optional[Path], cli: dict[str, Any], scheme_cli: dict[str, Any],
                         preset: Optional[str] = None):
    """defaults < preset < config file < command line (``None`` = not given) -> TrainConfig.

    Static image datasets (mnist, cifar10, cifar100, imagenet) default to ``data_kind="static"``
    (MTT samples every stage's T) and a paper net's input channels, image size and class count
    are filled from the dataset (:func:`flexsnn.training.presets.static_model_kwargs`).
    """
    from flexsnn.data.registry import is_static
    from flexsnn.training.presets import get_preset, static_model_kwargs
    from flexsnn.errors import ConfigError
    from flexsnn.options import check_field_types
    from flexsnn.training.trainer import TrainConfig

    merged = TrainConfig().to_dict()
    kind_given = scheme_cli.get("data_kind") is not None
    layers = [get_preset(preset)["config"]] if preset else []
    if file is not None:
        raw = _read_config_file(file)
        try:
            check_field_types(TrainConfig, raw)
        except ConfigError as err:  # name the file: the value came from it
            raise ConfigError(f"{file}: {err.field}", err.value, err.expected,
                              "fix the value in the config file") from err
        layers.append(raw)
    for raw in layers:
        scheme_raw = raw.pop("scheme", {}) or {}
        kind_given = kind_given or "data_kind" in scheme_raw
        merged.update(raw)
        merged["scheme"] = {**merged["scheme"], **scheme_raw}
    merged.update({k: v for k, v in cli.items() if v is not None})
    merged["scheme"] = {**merged["scheme"], **{k: v for k, v in scheme_cli.items() if v is not None}}
    merged["scheme"]["T"] = merged["T"]
    if is_static(merged["dataset"]):
        if not kind_given:
            merged["scheme"]["data_kind"] = "static"
        merged["model_kwargs"] = static_model_kwargs(merged["model"], merged["dataset"], merged["model_kwargs"] or {})
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
    preset: Optional[str] = typer.Option(None, "--preset", help="A paper's setting by name, e.g. cifar10-resnet19 "
                                         "(--list-presets shows them); options and --config override it."),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the presets and their sources, then exit."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Event data: saccade-mnist (default) or nmnist; "
                                          "static images (direct encoding): mnist (offline), cifar10, cifar100, "
                                          "imagenet (--root)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (N-MNIST layout; CIFAR binary files or "
                                        "ImageFolder; ImageNet ImageFolder)."),
    download: bool = typer.Option(False, "--download", help="Fetch the dataset into --root first when it is missing "
                                  "(N-MNIST through tonic, CIFAR's binary version); never without this flag."),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="sdt, nmt or mtt."),
    T: Optional[int] = typer.Option(None, "--T", help=f"Time bins of the data (default 10; 1..{MAX_T}).",
                                    callback=in_range(1, MAX_T)),
    t_min: Optional[int] = typer.Option(None, "--t-min", help="Smallest stage T (default 1).",
                                        callback=in_range(1, MAX_T)),
    t_max: Optional[int] = typer.Option(None, "--t-max", help="Largest stage T (default T).",
                                        callback=in_range(1, MAX_T)),
    s: Optional[int] = typer.Option(None, "--s", help="Configurations per step, NMT/MTT (default 3).",
                                    callback=in_range(1, 1000)),
    r_left: Optional[int] = typer.Option(None, "--r-left", help="Event data: stages from T-r_left ...",
                                         callback=in_range(0, MAX_T)),
    r_right: Optional[int] = typer.Option(None, "--r-right", help="... to T+r_right.",
                                          callback=in_range(0, MAX_T)),
    non_increasing: Optional[bool] = typer.Option(None, "--non-increasing/--any-order",
                                                  help="Only non-increasing T along the stages."),
    data_kind: Optional[str] = typer.Option(None, "--data-kind", help="event or static (default: static for image "
                                            "datasets, else event)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="ce, tet or tmc."),
    backprop: Optional[str] = typer.Option(None, "--backprop", help="bptt, rate (= rate_M) or rate_S (rate-based, memory flat in T)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd or adamw."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (cosine to 0; > 0).",
                                       callback=in_range(hi=10.0, above=0.0)),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay (>= 0).",
                                                 callback=in_range(0.0, 10.0)),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default 5).",
                                         callback=in_range(1, MAX_COUNT)),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per step (default 32).",
                                             callback=in_range(1, MAX_COUNT)),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Seed of initialisation, data order, "
                                       f"augmentation and sampling (0..{MAX_SEED}).",
                                       callback=in_range(0, MAX_SEED)),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N samples only.",
                                        callback=in_range(1, MAX_COUNT)),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Test on N samples only.",
                                             callback=in_range(1, MAX_COUNT)),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
    event_augment: Optional[str] = typer.Option(
        None, "--event-augment", help="Event-level augmentations against the generated-to-real "
        "gap, comma-separated: drop (events), jitter (time), skew (time), spatial (x/y jitter), "
        "noise (uniform events), hot (hot pixels), or all; e.g. drop,jitter,hot. Each recording is "
        "augmented before binning, with strengths drawn per sample (see data/event_augment.py)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    phase: Optional[str] = typer.Option(None, "--phase", help="train or bias_removal."),
    t_input_range: Optional[str] = typer.Option(
        None, "--t-input-range", help="MTT/NMT on event data: draw the input stage's T from MIN,MAX too "
        "(e.g. 1,100: the asynchronous chip acts like T~100 for a 300 ms recording); data are "
        "binned into MAX frames and summed into each drawn T."),
    t_sampling: Optional[str] = typer.Option(
        None, "--t-sampling", help="uniform (default) or log-uniform draws of every sampled T "
        "(log-uniform: as many draws in [1,10] as in [10,100])."),
    min_v_mem: Optional[float] = typer.Option(
        None, "--min-v-mem", max=0.999, help="Neuron floor in threshold units (the chip's threshold_low; "
        "speck-iaf default -1). See --deploy-min-v-mem for the floor of the exported chip image."),
    deploy_min_v_mem: Optional[float] = typer.Option(
        None, "--deploy-min-v-mem", max=0.999, help="Floor of the final checkpoint (so of the chip image), "
        "in threshold units, instead of the trained one; e.g. -16: the event-by-event chip then clips far "
        "less inhibition (measured: MTT's chip 76.6 -> 93.8 % async, while its time-binned T=10 run "
        "falls to 83 %; README 'Chip-faithful training')."),
    qat: Optional[bool] = typer.Option(
        None, "--qat/--no-qat", help="Fake-quantize weights, threshold and floor exactly as the converter "
        "discretizes (int8, per-layer scale), straight-through gradient. Needs a BN-free model."),
    train_spike: Optional[str] = typer.Option(
        None, "--train-spike", help="multi (default) or single: at most one spike per neuron per update, "
        "as on the chip (training only; the checkpoint stays exportable)."),
    synops_budget: Optional[float] = typer.Option(
        None, "--synops-budget", min=1.0, help="Penalise estimated SynOps per sample above N "
        "(counted as the chip backends count them), e.g. 1.5e6. Works with BPTT and rate-based backprop "
        "(there the spike pass gives the count, the rate pass the gradient)."),
    synops_weight: Optional[float] = typer.Option(
        None, "--synops-weight", min=0.0, help="Weight of the SynOps penalty relu(S/N - 1) (default 1)."),
    chip_T: Optional[int] = typer.Option(
        None, "--chip-T", help="Add the chip's configuration to every step: besides the scheme's "
        "configurations, one more pass with every stage at this many frames over the recording "
        "(the asynchronous chip acts like T~100 for a 300 ms recording), at --chip-floor, by "
        "--chip-backprop. Data are binned at this T and summed into the scheme's T. At least --T; "
        "off by default. Costs ~4x an MTT T=10 step at 100 (rate_M).", callback=in_range(1, MAX_T)),
    chip_floor: Optional[float] = typer.Option(
        None, "--chip-floor", max=0.999, help="Neuron floor (threshold units) during the chip pass "
        "only, restored afterwards; default -16, the deployed floor (--deploy-min-v-mem)."),
    chip_weight: Optional[float] = typer.Option(
        None, "--chip-weight", help="Weight of the chip pass's task loss (> 0; default 1); the "
        "SynOps budget applies to it unweighted, as to the other configurations.",
        callback=in_range(hi=1000.0, above=0.0)),
    chip_backprop: Optional[str] = typer.Option(
        None, "--chip-backprop", help="How the chip pass is trained: rate_M (default; memory flat in "
        "T), rate_S or bptt (about 12x an MTT T=10 step at T=100; needed with --qat)."),
    distill_from: Optional[Path] = typer.Option(
        None, "--distill-from", help="Distil this frozen teacher checkpoint (e.g. the SDT+BN base the "
        "fine-tune starts from) into every configuration: adds w * tau^2 * KL(teacher || student) on the "
        "output spike counts. Part of the chip recipe (+0.85 pt async; README 'Chip-faithful training')."),
    distill_weight: Optional[float] = typer.Option(
        None, "--distill-weight", help="Weight w of the distillation term (> 0; default 1; the chip recipe uses 3).",
        callback=in_range(hi=1000.0, above=0.0)),
    distill_temperature: Optional[float] = typer.Option(
        None, "--distill-temperature", help="Softmax temperature tau of the distillation (> 0; default 2).",
        callback=in_range(hi=100.0, above=0.0)),
    init_checkpoint: Optional[Path] = typer.Option(None, "--init-checkpoint", help="Start from these weights."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Output folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out (from its "
                                "last committed epoch; a finished run is returned as it is)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out (its "
                                   "checkpoints, metrics and config; other files stay). Without it, "
                                   "a folder holding a run is refused."),
) -> None:
    """Train a model; see the examples above."""
    from flexsnn.errors import ConfigError
    from flexsnn.options import check_output_path, parse_json_object
    from flexsnn.progress import cli_progress
    from flexsnn.training.trainer import train

    if list_presets:
        from flexsnn.training.presets import PRESETS

        for name in sorted(PRESETS):
            typer.echo(f"{name}: {PRESETS[name]['source']} ({PRESETS[name]['notes']})")
        return

    check_output_path(out, "--out", folder=True)
    kwargs = parse_json_object(model_kwargs, "--model-kwargs") if model_kwargs is not None else None
    if min_v_mem is not None:
        kwargs = dict(kwargs or {})
        kwargs["neuron"] = {**(kwargs.get("neuron") or {}), "min_v_mem": float(min_v_mem)}
    t_in = parse_int_list(t_input_range, field="--t-input-range") if t_input_range else None
    if t_in is not None and len(t_in) != 2:
        raise ConfigError("--t-input-range", t_input_range, "MIN,MAX (two integers)", "e.g. --t-input-range 1,100")
    cli = dict(chip_T=chip_T, chip_floor=chip_floor, chip_weight=chip_weight, chip_backprop=chip_backprop,
               qat=qat, train_spike=train_spike, deploy_min_v_mem=deploy_min_v_mem, synops_budget=synops_budget, synops_weight=synops_weight,
               model=model, model_kwargs=kwargs, dataset=dataset, root=str(root) if root else None, T=T,
               loss=loss, backprop=backprop, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
               epochs=epochs, batch_size=batch_size, seed=seed, limit=limit, test_limit=test_limit,
               augment=augment, event_augment=event_augment, device=device, phase=phase,
               init_checkpoint=str(init_checkpoint) if init_checkpoint else None,
               distill_checkpoint=str(distill_from) if distill_from else None, distill_weight=distill_weight,
               distill_temperature=distill_temperature)
    scheme_cli = dict(name=scheme, t_min=t_min, t_max=t_max, s=s, r_left=r_left, r_right=r_right,
                      non_increasing=non_increasing, data_kind=data_kind, sampling=t_sampling,
                      t_input_min=t_in[0] if t_in else None, t_input_max=t_in[1] if t_in else None)
    if resume and config is None and (out / "config.json").is_file():
        config = out / "config.json"  # the interrupted run's resolved settings
    cfg = resolve_train_config(config, cli, scheme_cli, preset=None if resume else preset)
    if download:
        from flexsnn.data.registry import load_dataset

        for split in ("train", "test"):
            load_dataset(cfg.dataset, split=split, root=cfg.root, seed=cfg.seed, limit=1, download=True)
    # -- distributed (flexsnn.training.distributed): under torchrun every rank trains, rank 0 writes/prints --
    from flexsnn.training.distributed import training_session

    with training_session(device=cfg.device) as context:
        res = train(cfg, out_dir=out, resume=resume, overwrite=overwrite, progress=cli_progress,
                    context=context)
    if not context.is_main:
        return
    for row in res.history:
        typer.echo("epoch {epoch}: loss {train_loss:.4f}  train acc {train_acc:.4f}".format(**row)
                   + (f"  test acc {row['test_acc']:.4f}" if "test_acc" in row else "")
                   + (f"  SynOps/sample {row['synops_per_sample'] / 1e6:.2f}M" if "synops_per_sample" in row else ""))
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
    seed: int = typer.Option(0, "--seed", callback=in_range(0, MAX_SEED)),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate N samples only.",
                                        callback=in_range(1, MAX_COUNT)),
    batch_size: int = typer.Option(64, "--batch-size", callback=in_range(1, MAX_COUNT)),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder."),
    t_protocol: str = typer.Option("rebin", "--t-protocol", help="Event data at another T: rebin (whole "
                                   "recording into T frames) or prefix (first T of the training T frames, "
                                   "the MTT paper's code)."),
    early_exit: Optional[str] = typer.Option(  # issue 10 (training/early_exit.py)
        None, "--early-exit", help="Also run early-exit inference (SEENN-I) at T_max = the largest "
        "--T: comma-separated confidence thresholds, e.g. 0.5,0.9,0.99; writes early_exit.json/png."),
    pj_per_synop: Optional[float] = typer.Option(  # issue 15
        None, "--pj-per-synop", min=0.0, help="Energy per SynOp in pJ for an energy estimate. No default: "
        "no per-SynOp energy of Speck2e is published that we could check; give your own figure."),
    calibration: bool = typer.Option(  # issue 4 (training/calibration_metrics.py)
        False, "--calibration", help="Also report accuracy, ECE and AdaECE (15 bins) of the cumulative-mean "
        "prediction at every step t of T_max = the largest --T; writes calibration.json and "
        "reliability_<label>.png."),
) -> None:
    """Evaluate checkpoints at several T; see the examples above."""
    from flexsnn.data.registry import load_dataset
    from flexsnn.errors import ConfigError
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.progress import cli_progress
    from flexsnn.training.evaluate import (FrameCache, accuracy_per_config, accuracy_per_T, format_table,
                                           plot_accuracy_curves)
    from flexsnn.training.synops import SynOpsMeter, energy_uj

    from flexsnn.options import check_output_path

    if len(checkpoint) > 2:
        raise ConfigError("--checkpoint", [str(c) for c in checkpoint], "one or two checkpoints")
    check_output_path(out, "--out", folder=True)
    Ts = parse_int_list(T, field="--T")
    configs = [tuple(parse_int_list(c, field="--config")) for c in (config or [])]
    loaded = [(_load(c), c) for c in checkpoint]
    name = dataset or loaded[0][0][1].dataset or "saccade-mnist"
    ds = load_dataset(name, split=split, root=root, seed=seed, limit=limit)
    data_T = _data_T(loaded[0][0][1])
    if t_protocol == "prefix" and any(_data_T(m) != data_T for (_, m), _ in loaded):
        raise ConfigError("--t-protocol", "prefix", "checkpoints trained at the same T",
                          hint="compare checkpoints of different training T with --t-protocol rebin")
    cache = FrameCache(ds, protocol=t_protocol, data_T=data_T)
    curves: dict[str, dict[int, float]] = {}
    report: dict[str, Any] = {"dataset": name, "split": split, "samples": len(ds), "T": Ts, "checkpoints": {},
                              "t_protocol": t_protocol, "data_T": data_T}
    for (model, meta), path in loaded:
        label = meta.scheme.get("name", path.stem) if meta.scheme else path.stem
        if label in curves:
            label = f"{label} ({path.parent.name}/{path.stem})"
        curves[label], synops = {}, {}
        for t in Ts:  # one pass per T gives accuracy and the SynOps estimate together
            with SynOpsMeter(model) as meter:
                curves[label].update(accuracy_per_T(model, cache, [t], batch_size=batch_size, progress=cli_progress))
                synops[t] = float(meter.pop()[0]) / max(len(ds), 1)
        entry: dict[str, Any] = {"path": str(path), "accuracy_per_T": curves[label], "synops_per_sample": synops}
        if pj_per_synop is not None:
            entry["energy_uj_per_sample"] = {t: energy_uj(v, pj_per_synop) for t, v in synops.items()}
        if configs:
            accs = accuracy_per_config(model, cache, configs, batch_size=batch_size, progress=cli_progress)
            entry["configs"] = [{"config": list(c), "accuracy": a} for c, a in zip(configs, accs)]
        report["checkpoints"][label] = entry
    typer.echo(format_table(curves))
    for label, entry in report["checkpoints"].items():
        typer.echo(f"{label} SynOps per sample (estimate): " + ", ".join(
            f"T={t} {v / 1e6:.2f}M" for t, v in entry["synops_per_sample"].items())
            + ("" if pj_per_synop is None else "; energy " + ", ".join(
                f"T={t} {v:.2f} uJ" for t, v in entry["energy_uj_per_sample"].items())))
        for row in entry.get("configs", []):
            typer.echo(f"{label} config {tuple(row['config'])}: {100 * row['accuracy']:.2f}%")
    out.mkdir(parents=True, exist_ok=True)
    report["provenance"] = provenance({"checkpoint": [str(c) for c in checkpoint], "T": Ts,
                                       "config": [list(c) for c in configs], "dataset": name,
                                       "split": split, "seed": seed, "limit": limit, "t_protocol": t_protocol})
    atomic_write_json(out / "eval.json", report)
    plot_accuracy_curves(curves, out / "accuracy.png", title=f"accuracy vs T ({name})")
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'accuracy.png'}")
    if early_exit:  # issue 10: the same run as `flexsnn analyze early-exit`
        from flexsnn.apps.analysis import format_early_exit, run_early_exit
        from flexsnn.options import parse_floats

        ee = run_early_exit(checkpoint, dataset=name, root=root, split=split, seed=seed, limit=limit,
                            T=max(Ts), thresholds=parse_floats(early_exit, option="--early-exit"),
                            batch_size=batch_size, out=out, progress=cli_progress)
        typer.echo(format_early_exit(ee))
        typer.echo(f"wrote {out / 'early_exit.json'} and {out / 'early_exit.png'}")
    if calibration:  # issue 4: per-step accuracy / ECE / AdaECE at T_max
        _eval_calibration(loaded, cache, T=max(Ts), batch_size=batch_size, out=out)


def _eval_calibration(loaded: list, cache: Any, *, T: int, batch_size: int, out: Path) -> None:
    """``eval --calibration``: per-step calibration of each checkpoint at uniform ``T`` (issue 4)."""
    import re

    from flexsnn.io_utils import atomic_write_json
    from flexsnn.progress import cli_progress
    from flexsnn.training.calibration_metrics import evaluate_calibration

    result: dict[str, Any] = {"T": T, "bins": 15, "checkpoints": {}}
    for (model, meta), path in loaded:
        label = meta.scheme.get("name", path.stem) if meta.scheme else path.stem
        if label in result["checkpoints"]:
            label = f"{label} ({path.parent.name}/{path.stem})"
        png = out / f"reliability_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png"
        loader = cache.loader(T, batch_size)
        rep = evaluate_calibration(model, loader, config=T, reliability_png=png, progress=cli_progress,
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
    batches: int = typer.Option(10, "--batches", help="Training batches to average over.",
                                callback=in_range(1, MAX_COUNT)),
    batch_size: int = typer.Option(32, "--batch-size", callback=in_range(1, MAX_COUNT)),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, "--root"),
    seed: int = typer.Option(0, "--seed", callback=in_range(0, MAX_SEED)),
    remove_biases_: bool = typer.Option(False, "--remove-biases", help="Also fold BN and drop biases."),
) -> None:
    """Calibrate BN statistics of a checkpoint; see the examples above."""
    from dataclasses import replace

    from flexsnn.data.frames import frame_loader
    from flexsnn.data.images import frames_for
    from flexsnn.data.registry import load_dataset
    from flexsnn.errors import ConfigError
    from flexsnn.models.checkpoint import save_checkpoint
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import calibrate_bn, has_batch_norm, remove_biases
    from flexsnn.training.schemes import SchemeConfig

    from flexsnn.options import check_output_path

    if out is not None:
        check_output_path(out, "--out")
    model, meta = _load(checkpoint)
    if not has_batch_norm(model):
        raise ConfigError("--checkpoint", str(checkpoint), "a model with BatchNorm layers",
                          "this model has none; nothing to calibrate")
    if config is not None:
        cfg = tuple(parse_int_list(config, field="--config"))
    else:
        cfg = SchemeConfig(**meta.scheme).max_config(model.num_stages) if meta.scheme else (meta.t_range[1],) * model.num_stages
    name = dataset or meta.dataset or "saccade-mnist"
    ds = load_dataset(name, split="train", root=root, seed=seed, limit=batches * batch_size)
    loader = frame_loader(frames_for(ds, cfg[0]), T=cfg[0], batch_size=batch_size, shuffle=True, seed=seed)
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
    budget_T: int = typer.Option(3, "--budget-T", help="Energy budget = that of uniform T.",
                                 callback=in_range(1, MAX_T)),
    n_fit: int = typer.Option(18, "--n-fit", help="Configurations to fit on.", callback=in_range(1, 10_000)),
    n_holdout: int = typer.Option(10, "--n-holdout", help="Held-out configurations.",
                                  callback=in_range(0, 10_000)),
    t_min: int = typer.Option(1, "--t-min", callback=in_range(1, MAX_T)),
    t_max: Optional[int] = typer.Option(None, "--t-max", help="Default: the checkpoint's T_max.",
                                        callback=in_range(1, MAX_T)),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    root: Optional[Path] = typer.Option(None, "--root"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Test samples used per measurement.",
                                        callback=in_range(1, MAX_COUNT)),
    batch_size: int = typer.Option(64, "--batch-size", callback=in_range(1, MAX_COUNT)),
    seed: int = typer.Option(0, "--seed", callback=in_range(0, MAX_SEED)),
    bn_calibrations: int = typer.Option(3, "--bn-calibrations", min=0, help="Models with BN: calibrate BN at "
                                        "each configuration this many times (on different training batches) "
                                        "and average the accuracies (paper A.3); 0 = the checkpoint's statistics."),
    calib_batches: int = typer.Option(10, "--calib-batches", min=1, help="Training batches per BN calibration."),
    out: Path = typer.Option(Path("runs/search"), "--out"),
) -> None:
    """Fit the accuracy model and search configurations; see the examples above."""
    from flexsnn.data.frames import frame_loader
    from flexsnn.data.registry import load_dataset
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.training.bn_calibration import has_batch_norm
    from flexsnn.training.evaluate import FrameCache, accuracy_per_config, firing_rates
    from flexsnn.training.search import bn_calibrated_measure, run_search

    from flexsnn.errors import ConfigError
    from flexsnn.options import check_output_path, check_range

    check_output_path(out, "--out", folder=True)
    model, meta = _load(checkpoint)
    t_range = meta.t_range
    if len(t_range) != 2 or not all(isinstance(t, int) and not isinstance(t, bool) for t in t_range):
        raise ConfigError(f"{checkpoint.with_suffix('.json')}: meta.t_range", meta.t_range,
                          "two integers [T_min, T_max]", "Re-export the checkpoint, or pass --t-max")
    hi = t_max or check_range(f"{checkpoint.with_suffix('.json')}: meta.t_range[1]", t_range[1],
                              lo=1, hi=MAX_T, integer=True)
    if t_min > hi:
        raise ConfigError("--t-min", t_min, f"<= T_max ({hi})")
    name = dataset or meta.dataset or "saccade-mnist"
    ds = load_dataset(name, split="test", root=root, seed=seed, limit=limit)
    cache = FrameCache(ds)
    rates = firing_rates(model, cache, hi, batch_size=batch_size)
    ranges = [(t_min, hi)] * model.num_stages
    measure = lambda c: accuracy_per_config(model, cache, [c], batch_size=batch_size)[0]  # noqa: E731
    n_cal = bn_calibrations if has_batch_norm(model) else 0
    if n_cal:
        train_cache = FrameCache(load_dataset(name, split="train", root=root, seed=seed))
        measure = bn_calibrated_measure(
            model, measure, lambda c, k: frame_loader(train_cache.get(c[0]), T=c[0], batch_size=batch_size,
                                                      shuffle=True, seed=seed * 1000 + k),
            n_calibrations=n_cal, n_batches=calib_batches)
    rep = run_search(measure, rates, ranges, budget_T=budget_T, n_fit=n_fit, n_holdout=n_holdout, seed=seed)
    doc = rep.to_dict()
    doc["stages"] = list(model.stage_names)
    doc["bn_calibrations"] = n_cal
    doc["provenance"] = provenance({"checkpoint": str(checkpoint), "budget_T": budget_T, "n_fit": n_fit,
                                    "n_holdout": n_holdout, "t_min": t_min, "t_max": hi, "dataset": name,
                                    "limit": limit, "seed": seed, "bn_calibrations": n_cal,
                                    "calib_batches": calib_batches})
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
