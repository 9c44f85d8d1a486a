"""The trainer: SDT / NMT / MTT training of a zoo TFSNN on an event dataset, with exact resume.

Entry point: :func:`train(config, out_dir=..., resume=False, progress=None, context=None)`.

One optimizer step (:func:`train_step`, in :mod:`flexsnn.training.steps`): the scheme samples its configurations from a generator
seeded by ``(config.seed, global_step)``; for each configuration the model is set to it and a
*step function* (selected by ``config.backprop``, see :func:`get_step_fn`) computes the loss and
accumulates gradients; after all configurations, one optimizer step. Gradients of the
configurations are summed (the paper's Algorithm 1).

Outputs in ``out_dir``: ``last.safetensors`` (+ ``.json``; raw weights after the last finished
epoch), ``state.safetensors`` (+ ``.json``; optimizer, scheduler, RNG states, history: what
``resume`` needs), ``final.safetensors`` (after BN calibration when the model has BN and the
scheme mixes time steps), ``metrics.jsonl`` / ``metrics.csv`` (one row per epoch) and
``config.json`` (resolved config + provenance). Every file is written atomically, every epoch;
the epoch's checkpoint pair and state are committed together (:mod:`flexsnn.training.run_store`),
so a kill at any instant leaves a run that ``resume`` continues.

Determinism: weights come from ``seed_everything(seed)``; the epoch-``e`` sample order and
augmentation draws are pure functions of ``(seed, e)`` and the configurations of
``(seed, step)``, so a resumed run repeats an uninterrupted one exactly (CPU).

Distributed training: pass a :class:`RunContext` subclass (rank, world size, ``shard`` of
the epoch's sample order, ``no_sync`` around all but the last backward of a step,
``all_reduce`` of metric sums); only ``context.is_main`` writes files.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.options import MAX_SEED, MAX_T, check_field_types, check_range
from flexsnn.progress import ProgressFactory, null_progress
from flexsnn.training.chip_config import summed_batches, train_data_T
from flexsnn.training.run_store import (RunFolder, _join_optimizer_state, _set_rng_states,
                                        load_train_state, save_train_state, write_metrics)
from flexsnn.training.schemes import SchemeConfig, sample_configs, step_generator
from flexsnn.training.steps import (STEP_FNS, RunContext, StepStats, bptt_step, get_step_fn, rate_step,
                                    train_step)

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
BACKPROPS = ("bptt", "rate", "rate_M", "rate_S")  # "rate" is rate_M
PHASES = ("train", "bias_removal")
EPOCH_STREAM = 0xE90C


# =========================================================================== config
@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (JSON round trip via :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        model, model_kwargs: zoo model name and builder arguments.
        dataset, root: dataset name (``flexsnn.data.registry.load_dataset``: event or static) and its folder.
        T: number of time bins of the data (frames per sample).
        scheme: :class:`SchemeConfig` (its ``T`` must equal ``T``).
        loss, loss_params: ``build_loss(loss, **loss_params)``.
        backprop: ``"bptt"``, or rate-based backprop (:mod:`flexsnn.training.rate_backprop`):
            ``"rate_M"`` (alias ``"rate"``) or ``"rate_S"`` (memory flat in T).
        optimizer: ``"sgd"`` (momentum ``momentum``, Nesterov off) or ``"adamw"``.
        lr, weight_decay: learning rate (cosine-annealed to 0 over all steps) and decay.
        epochs, batch_size, seed: as named.
        limit, test_limit: use only the first N train / test samples (quick runs).
        augment: event augmentation (flip + shift) on training frames.
        event_augment: event-level augmentations against the generated-to-real gap, applied to
            each training recording before binning: comma-separated names from
            :data:`flexsnn.data.event_augment.EVENT_AUGMENTS` (``""`` = none).
        bn_calibration_batches: batches for BN calibration at T_max (0 = never calibrate).
        amp: mixed precision (used on CUDA only).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        phase: ``"train"`` or ``"bias_removal"`` (fold BN of ``init_checkpoint`` and fine-tune
            without BN and biases, the paper's Speck pipeline).
        init_checkpoint: weights to start from (required for ``bias_removal``).
        eval_every: test accuracy every N epochs (and after the last).
        grad_clip: max gradient norm (None = off).
        qat, train_spike: chip-faithful forward (:mod:`flexsnn.training.qat`): fake-quantize as
            the converter discretizes; ``"single"``: at most one spike per neuron per update.
        synops_budget, synops_weight: add ``weight * relu(S / budget - 1)`` to the loss, S the
            estimated SynOps per sample (:mod:`flexsnn.training.synops`); None = no penalty.
        distill_checkpoint, distill_weight, distill_temperature: knowledge distillation from
            this frozen teacher checkpoint at ``T`` (:mod:`flexsnn.training.distill`); None = off.
        deploy_min_v_mem: the final checkpoint's neuron floor (threshold units; exported as the
            chip's ``threshold_low``) when it differs from the trained one; None = as trained.
        chip_T, chip_floor, chip_weight, chip_backprop: one more pass per step imitating the chip
            (every stage at ``chip_T`` frames, floor ``chip_floor``, loss x ``chip_weight``, by
            ``chip_backprop``; :mod:`flexsnn.training.chip_config`); ``chip_T`` None = off.
    """

    model: str = "speck3c1fc"
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "saccade-mnist"
    root: str | None = None
    T: int = 10
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    loss: str = "ce"
    loss_params: dict = field(default_factory=dict)
    backprop: str = "bptt"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    epochs: int = 5
    batch_size: int = 32
    seed: int = 0
    limit: int | None = None
    test_limit: int | None = None
    augment: bool = False
    event_augment: str = ""
    bn_calibration_batches: int = 10
    amp: bool = True
    device: str = "auto"
    phase: str = "train"
    init_checkpoint: str | None = None
    eval_every: int = 1
    grad_clip: float | None = None
    qat: bool = False
    train_spike: str = "multi"
    synops_budget: float | None = None
    synops_weight: float = 1.0
    distill_checkpoint: str | None = None
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    deploy_min_v_mem: float | None = None
    chip_T: int | None = None
    chip_floor: float = -16.0
    chip_weight: float = 1.0
    chip_backprop: str = "rate_M"

    def __post_init__(self) -> None:
        check_field_types(TrainConfig, {f.name: getattr(self, f.name) for f in fields(self)})
        if isinstance(self.scheme, dict):
            object.__setattr__(self, "scheme", SchemeConfig(**self.scheme))
        for name in ("T", "epochs", "batch_size", "eval_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(name, v, "an integer >= 1")
        check_range("bn_calibration_batches", self.bn_calibration_batches, lo=0, integer=True)
        if self.scheme.T != self.T:
            raise ConfigError("scheme.T", self.scheme.T, f"the data's T ({self.T})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if self.backprop not in BACKPROPS:
            raise ConfigError("backprop", self.backprop, f"one of {', '.join(BACKPROPS)}")
        from flexsnn.training.losses import LOSSES

        if self.loss not in LOSSES:  # before any data is read (the loss is built much later)
            raise ConfigError("loss", self.loss, f"one of {', '.join(LOSSES)}", hint="e.g. --loss tmc")
        if self.phase not in PHASES:
            raise ConfigError("phase", self.phase, f"one of {', '.join(PHASES)}")
        if self.phase == "bias_removal" and not self.init_checkpoint:
            raise ConfigError("init_checkpoint", None, "a checkpoint trained with BN",
                              "the bias-removal phase fine-tunes an existing model")
        check_range("T", self.T, lo=1, hi=MAX_T, integer=True)
        check_range("seed", self.seed, lo=0, hi=MAX_SEED, integer=True)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr", self.lr, "a positive number")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError("weight_decay", self.weight_decay, ">= 0")
        check_range("momentum", self.momentum, lo=0, hi=1)
        for name in ("limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(name, v, "an integer >= 1 or None")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("device", self.device, "auto, cpu or cuda")
        if self.deploy_min_v_mem is not None and not (math.isfinite(self.deploy_min_v_mem)
                                                      and self.deploy_min_v_mem < 1.0):
            raise ConfigError("deploy_min_v_mem", self.deploy_min_v_mem, "a number below the threshold (1.0) or None",
                              "e.g. --deploy-min-v-mem -16")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise ConfigError("grad_clip", self.grad_clip, "a positive number or None")
        from flexsnn.data.event_augment import parse_event_augment
        from flexsnn.training.chip_session import check_chip_options

        check_chip_options(self)
        parse_event_augment(self.event_augment)  # raises ConfigError naming a bad name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested ``scheme``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. a JSON config file); unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(unknown[0], raw[unknown[0]], f"a TrainConfig field: {sorted(known)}")
        raw = dict(raw)
        check_field_types(cls, raw)
        if isinstance(raw.get("scheme"), dict):
            sk = {f.name for f in fields(SchemeConfig)}
            bad = sorted(set(raw["scheme"]) - sk)
            if bad:
                raise ConfigError(f"scheme.{bad[0]}", raw["scheme"][bad[0]], f"a scheme field: {sorted(sk)}")
            raw["scheme"] = SchemeConfig(**raw["scheme"])
        return cls(**raw)


# =========================================================================== data
class EpochFrames:
    """Epoch view of a :class:`FrameDataset`: augmentation draws from ``numpy_rng(seed, epoch, i)``
    (a pure function of the sample and epoch), frames from the shared cache."""

    def __init__(self, frames: Any, augment: Any, seed: int, epoch: int, event_augment: Any = None) -> None:
        self.frames, self.augment, self.seed, self.epoch = frames, augment, seed, epoch
        self.event_augment = event_augment

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        from flexsnn.data.frames import augment_frames, events_to_frames
        from flexsnn.seeding import numpy_rng

        if self.event_augment:  # event-level: augment the recording, then bin it (no cache)
            from flexsnn.data.event_augment import apply_event_augment

            events, label = self.frames.events[index]
            events = apply_event_augment(events, self.frames.sensor, self.event_augment,
                                         numpy_rng(self.seed, EPOCH_STREAM, self.epoch, index, 1))
            x = events_to_frames(events, self.frames.sensor, self.frames.T)
        else:
            x, label = self.frames.frames(index)
        if self.augment is not None:
            x = augment_frames(x, self.augment, numpy_rng(self.seed, EPOCH_STREAM, self.epoch, index))
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(label, dtype=torch.int64)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's shuffled sample order: a pure function of ``(seed, epoch)``."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, EPOCH_STREAM, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=g).tolist()


def epoch_loader(frames: Any, config: TrainConfig, epoch: int, context: RunContext):
    """DataLoader of one epoch: ``(x [B, T, C, H, W] float32, y [B] int64)``."""
    from torch.utils.data import DataLoader

    from flexsnn.data.frames import Augment

    from flexsnn.data.event_augment import parse_event_augment

    aug = (getattr(frames, "train_augment", None) or Augment()) if config.augment else None
    order = context.shard(epoch_order(len(frames), config.seed, epoch))
    ev_aug = parse_event_augment(config.event_augment) or None
    return DataLoader(EpochFrames(frames, aug, config.seed, epoch, ev_aug), batch_size=config.batch_size,
                      sampler=order, drop_last=False, num_workers=0)


# =========================================================================== model / optim
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "an available device", "CUDA is not available here; use --device cpu")
    return torch.device(name)


def build_training_model(config: TrainConfig) -> tuple[nn.Module, str, dict[str, Any]]:
    """The model to train, its zoo name and resolved kwargs (bias removal applied if asked)."""
    from flexsnn.models.checkpoint import load_model
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import freeze_biases, remove_biases

    if config.phase == "bias_removal":
        trained, meta = load_model(config.init_checkpoint)
        kwargs = dict(meta.model_kwargs, **config.model_kwargs, batch_norm=False)  # e.g. a deeper floor
        model = remove_biases(trained, rebuild=lambda: build_model(meta.model_name, **kwargs))
        freeze_biases(model)
        return model, meta.model_name, dict(getattr(model, "zoo_kwargs", kwargs))
    model = build_model(config.model, **config.model_kwargs)
    if config.init_checkpoint:
        from flexsnn.models.checkpoint import load_checkpoint

        state, _ = load_checkpoint(config.init_checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(config.init_checkpoint, f"weights do not fit {config.model}: {err}",
                                  "use a checkpoint of the same model") from err
    return model, config.model, dict(getattr(model, "zoo_kwargs", config.model_kwargs))


def build_optimizer(model: nn.Module, config: TrainConfig, total_steps: int):
    """Optimizer over trainable parameters and a per-step cosine schedule to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=0.0)
    return opt, sched


# =========================================================================== train
@dataclass
class TrainResult:
    """``model`` (final, calibrated if applicable, eval mode), ``history`` (one dict per epoch),
    ``final_path`` / ``last_path`` (checkpoints), ``metrics`` (final)."""

    model: nn.Module
    history: list[dict[str, Any]]
    final_path: Path | None
    last_path: Path | None
    metrics: dict[str, Any]


def _meta(config: TrainConfig, model: nn.Module, name: str, kwargs: dict[str, Any], epoch: int,
          metrics: dict[str, Any], extra: dict[str, Any]):
    from flexsnn.models.checkpoint import CheckpointMeta

    return CheckpointMeta(model_name=name, model_kwargs=kwargs, neuron_profile=model.neuron_profile,
                          stages=tuple(model.stage_names), scheme=config.scheme.to_dict(),
                          t_range=tuple(config.scheme.t_range), dataset=config.dataset, metrics=metrics,
                          epoch=epoch, extra={"loss": config.loss, "loss_params": config.loss_params,
                                              "backprop": config.backprop, "phase": config.phase,
                                              "train_config": config.to_dict(), **extra})


def _calibrated_copy(model: nn.Module, frames: Any, config: TrainConfig, epoch: int,
                     context: RunContext) -> nn.Module:
    """The model itself, or a BN-calibrated copy when BN exists and the scheme mixes T."""
    from flexsnn.training.bn_calibration import calibrate_bn, has_batch_norm

    if not has_batch_norm(model) or config.scheme.name == "sdt" or config.bn_calibration_batches == 0:
        return model
    from flexsnn.training.bn_calibration import reset_model_state

    reset_model_state(model)  # neuron state from the last step is not a graph leaf
    calibrated = copy.deepcopy(model)
    loader = epoch_loader(frames, config, epoch + 100_000, context)  # separate, fixed order
    cal_config = config.scheme.max_config(model.num_stages)
    if config.chip_T is not None:  # data binned at chip_T: summed into the calibration's input T
        loader = summed_batches(loader, cal_config[0])
    seen = calibrate_bn(calibrated, loader, config=cal_config,
                        n_batches=config.bn_calibration_batches)
    context.sync_bn(calibrated, seen)  # distributed: average over every rank's batches
    return calibrated


def train(config: TrainConfig, *, out_dir: str | Path, resume: bool = False,
          progress: ProgressFactory | None = None, context: RunContext | None = None,
          train_data: Any = None, test_data: Any = None, overwrite: bool = False) -> TrainResult:
    """Train ``config`` writing everything to ``out_dir`` (see module docstring).

    Args:
        resume: continue from the committed epoch of ``out_dir`` (the stored config must
            equal ``config``; see :mod:`flexsnn.training.run_store`); a finished run is
            returned unchanged.
        progress: progress factory (the CLI passes tqdm); bars show loss and accuracy.
        context: distributed hooks (default single process).
        train_data, test_data: datasets (event or ImageDataset) to use instead of ``load_dataset``.
        overwrite: replace a run already in ``out_dir`` (without it, and without ``resume``,
            such a folder is refused).

    Raises:
        ConfigError: invalid settings, a resume with a different config, or a folder that
            holds a run (neither ``resume`` nor ``overwrite``).
        CheckpointError: missing / damaged resume files.
    """
    from flexsnn.data.images import frames_for
    from flexsnn.data.registry import load_dataset
    from flexsnn.io_utils import atomic_write_json, provenance
    from flexsnn.models.checkpoint import load_checkpoint, save_checkpoint
    from flexsnn.seeding import seed_everything
    from flexsnn.training.bn_calibration import has_batch_norm
    from flexsnn.training.evaluate import accuracy
    from flexsnn.training.losses import build_loss

    context = context or RunContext()
    progress = progress if (progress is not None and context.is_main) else null_progress
    out = Path(out_dir)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    last_path, final_path = out / "last.safetensors", out / "final.safetensors"
    store = RunFolder(out)
    committed = store.prepare(resume=resume, overwrite=overwrite, is_main=context.is_main)
    if train_data is None:
        train_data = load_dataset(config.dataset, split="train", root=config.root, seed=config.seed,
                                        limit=config.limit)
    if test_data is None:
        test_data = load_dataset(config.dataset, split="test", root=config.root, seed=config.seed,
                                       limit=config.test_limit)
    train_frames = frames_for(train_data, T=train_data_T(config))  # static images: direct encoding (data/images.py)
    test_frames = frames_for(test_data, T=config.T)
    _warm_cache(train_frames)  # bin once up front so epoch_seconds measure training only

    tfsnn, model_name, model_kwargs = build_training_model(config)
    tfsnn.to(device)
    from flexsnn.training.chip_session import ChipSession

    chip = ChipSession(tfsnn, config, build_loss(config.loss, **config.loss_params), device=device)
    step_fn = get_step_fn(config.backprop)
    chip_pass = chip.config_pass(get_step_fn(config.chip_backprop))  # None unless chip_T is set
    steps_per_epoch = math.ceil(len(context.shard(list(range(len(train_frames))))) / config.batch_size)
    optimizer, scheduler = build_optimizer(tfsnn, config, steps_per_epoch * config.epochs)
    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda") if (use_amp and config.backprop == "bptt" and (
        chip_pass is None or config.chip_backprop == "bptt")) else None  # rate steps run their own backward

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()

    history: list[dict[str, Any]] = []
    start_epoch, global_step = 0, 0
    if committed is not None:
        state_path = committed[1]
        tensors, doc = load_train_state(state_path)
        stored = doc.get("config")
        try:  # settings added since the state was written take their defaults
            stored = TrainConfig.from_dict(dict(stored)).to_dict() if isinstance(stored, dict) else stored
        except (ConfigError, TypeError, ValueError):
            pass
        if stored != config.to_dict():
            diff = sorted(k for k in set(stored or {}) | set(config.to_dict())
                          if (stored or {}).get(k) != config.to_dict().get(k))
            raise ConfigError(diff[0] if diff else "config", config.to_dict().get(diff[0]) if diff else None,
                              f"the interrupted run's value {(stored or {}).get(diff[0]) if diff else None!r}",
                              "resume with the same settings (or start a new --out)")
        weights, meta = load_checkpoint(committed[0])
        if meta.epoch != doc["epoch"]:
            raise CheckpointError(committed[0], f"epoch {meta.epoch} does not match the resume state's {doc['epoch']}",
                                  "the run was interrupted while saving; restart without --resume")
        tfsnn.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(_join_optimizer_state(tensors, doc["optimizer"]))
        scheduler.load_state_dict(doc["scheduler"])
        if scaler is not None and doc.get("scaler"):
            scaler.load_state_dict(doc["scaler"])
        _set_rng_states(tensors, doc["rng"])
        start_epoch, global_step, history = int(doc["epoch"]), int(doc["global_step"]), list(doc["history"])
        log.info("resuming %s at epoch %d (step %d)", out, start_epoch, global_step)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", provenance(config.to_dict()))
        if committed is not None:
            write_metrics(out, history)  # a row lost by a kill while metrics were replaced

    model = context.wrap_model(tfsnn)
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    for epoch in range(start_epoch, config.epochs):
        tfsnn.train()
        loader = epoch_loader(train_frames, config, epoch, context)
        bar = progress(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}")
        sums = torch.zeros(3, dtype=torch.float64)  # loss_sum, correct, seen
        t0 = time.perf_counter()
        for x, y in chip.batches(loader):
            x = x.to(device, non_blocking=True).transpose(0, 1).contiguous()
            y = y.to(device, non_blocking=True)
            configs = sample_configs(config.scheme, tfsnn.num_stages, step_generator(config.seed, global_step))
            st = train_step(model, x, y, configs, chip.loss_for(x), step_fn, optimizer, scaler=scaler, autocast=autocast,
                            context=context, grad_clip=config.grad_clip, tfsnn=tfsnn,
                            resample_input=config.scheme.draws_input or chip_pass is not None, chip_pass=chip_pass)
            scheduler.step()
            global_step += 1
            sums += torch.tensor([st.loss_sum / len(st.configs) * y.numel(), st.correct / len(st.configs), y.numel()],
                                 dtype=torch.float64)
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.3f}")
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        sums = context.all_reduce(sums)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": global_step, "train_loss": float(sums[0] / sums[2]),
                               "train_acc": float(sums[1] / sums[2]), "lr": float(scheduler.get_last_lr()[0]),
                               "epoch_seconds": epoch_seconds, **chip.epoch_metrics(context.all_reduce)}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            evaluated = _calibrated_copy(tfsnn, train_frames, config, epoch, context)
            row.update(chip.evaluate(evaluated, lambda m: accuracy(m, _eval_loader(test_frames, config),
                                                                   config=config.T), n=len(test_frames)))
            tfsnn.set_uniform(config.T)
        history.append(row)
        metrics = dict(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if context.is_main:
            meta = _meta(config, tfsnn, model_name, model_kwargs, epoch + 1, metrics, {"calibrated": False})
            store.commit_epoch(
                epoch + 1, lambda p: save_checkpoint(p, tfsnn, meta),
                lambda p: save_train_state(p, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                           epoch=epoch + 1, global_step=global_step, history=history,
                                           config=config))
            write_metrics(out, history)

    def evaluate_final() -> None:
        metrics.update(chip.evaluate(final, lambda m: accuracy(m, _eval_loader(test_frames, config),
                                                               config=config.T), n=len(test_frames)))

    final = _calibrated_copy(tfsnn, train_frames, config, config.epochs, context)
    calibrated = final is not tfsnn
    if calibrated and history:
        evaluate_final()
    if config.deploy_min_v_mem is not None:  # the floor the chip will run with
        from flexsnn.models.zoo import with_min_v_mem

        final = with_min_v_mem(final, config.deploy_min_v_mem)
        model_kwargs = dict(final.zoo_kwargs)
        if history:
            evaluate_final()
    final.set_uniform(config.T)
    final.eval()
    if context.is_main:
        save_checkpoint(final_path, final, _meta(config, final, model_name, model_kwargs, config.epochs, metrics,
                                                 {"calibrated": calibrated,
                                                  "has_batch_norm": has_batch_norm(final)}))
    return TrainResult(model=final, history=history, final_path=final_path if context.is_main else None,
                       last_path=last_path if context.is_main else None, metrics=metrics)


def _warm_cache(frames: Any, limit_bytes: int = 256 * 2**20) -> None:
    """Bin every sample once when the int16 frame cache can hold them all."""
    c, h, w = frames.sensor.polarities, frames.sensor.height, frames.sensor.width
    if len(frames) * frames.T * c * h * w * 2 <= limit_bytes:
        for i in range(len(frames)):
            frames.frames(i)


def _eval_loader(frames: Any, config: TrainConfig):
    from flexsnn.data.frames import frame_loader

    return frame_loader(frames, T=config.T, batch_size=max(config.batch_size, 64), shuffle=False)


def iter_configs_for_epoch(config: TrainConfig, num_stages: int, first_step: int, steps: int) -> Iterator[list]:
    """The configurations steps ``first_step ..`` will use (inspection / DDP checks)."""
    for step in range(first_step, first_step + steps):
        yield sample_configs(config.scheme, num_stages, step_generator(config.seed, step))


__all__ = ["TrainConfig", "RunContext", "TrainResult", "StepStats", "train", "train_step", "bptt_step",
           "rate_step", "get_step_fn", "STEP_FNS", "epoch_order", "epoch_loader", "build_optimizer",
           "build_training_model", "save_train_state", "load_train_state", "write_metrics", "replace"]
