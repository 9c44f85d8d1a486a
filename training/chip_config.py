"""The chip's configuration in every training step (issue 15): besides the scheme's temporal
configurations, each optimizer step runs one more forward/backward that imitates the deployed
asynchronous chip: every stage at ``chip_T`` frames over the recording (the chip behaves like
very fine bins, about T = 100 for a 300 ms recording) with the neurons' floor (``min_v_mem``,
threshold units; the chip's ``threshold_low``) at ``chip_floor``, the deployed one, for that pass
only. Its task loss is weighted by ``chip_weight``; the SynOps budget's hinge is added as for the
scheme's configurations. The coarse configurations keep training at the model's own floor, which
the recipe found they need; the extra pass is the only one that sees the deployed regime.

Data: with ``chip_T`` set the trainer bins the training recordings into ``chip_T`` frames
(:func:`train_data_T`) and sums them into each scheme configuration's input T with the TTM's even
grouping (:func:`flexsnn.training.schemes.input_frames`), as for drawn input T. For ``chip_T`` a
multiple of ``T`` (100 -> 10: whole groups of 10) the sum equals binning at ``T`` directly when the
recording's duration ``D`` (µs) has ``D mod chip_T < chip_T / T``; otherwise, because
:func:`flexsnn.data.frames.time_bin_index` floors the window length per T, fine window ``i`` ends up
to ``(chip_T / T - 1) * i`` µs before the coarse one and the last ``D mod chip_T`` µs fall outside
every fine window: measured on 200 generated training recordings, 0.11 % of the events land in
another coarse frame or are dropped (53 of 200 recordings identical; tests/test_chip_config.py).

Cost: ``chip_backprop`` ``"rate_M"`` (default) keeps memory flat in T; BPTT at T = 100 costs
about 12x an MTT T=10 step here (``fine_T_cost`` in ``benchmarks/results/async_gap.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from flexsnn.errors import ConfigError

#: backprop methods of the chip pass (``"rate"`` is ``"rate_M"``, as for ``TrainConfig.backprop``)
CHIP_BACKPROPS = ("bptt", "rate", "rate_M", "rate_S")


def check_chip_config_options(config: Any) -> None:
    """Validate ``chip_T``, ``chip_floor``, ``chip_weight``, ``chip_backprop`` of a TrainConfig
    (ConfigError naming the field, the value, the limit and a fix)."""
    from flexsnn.options import MAX_T

    if config.chip_backprop not in CHIP_BACKPROPS:
        raise ConfigError("chip_backprop", config.chip_backprop, f"one of {', '.join(CHIP_BACKPROPS)}",
                          "rate_M keeps the T=100 pass's memory flat")
    if not (isinstance(config.chip_floor, (int, float)) and math.isfinite(config.chip_floor)
            and config.chip_floor < 1.0):
        raise ConfigError("chip_floor", config.chip_floor, "a number below the threshold (1.0)",
                          "the deployed floor, e.g. --chip-floor -16")
    if not (isinstance(config.chip_weight, (int, float)) and math.isfinite(config.chip_weight)
            and config.chip_weight > 0):
        raise ConfigError("chip_weight", config.chip_weight, "a positive number",
                          "e.g. --chip-weight 1; leave --chip-T unset to switch the chip pass off")
    if config.chip_T is None:
        return
    if config.scheme.data_kind != "event":
        raise ConfigError("chip_T", config.chip_T, "unset with static data",
                          "the chip pass bins event recordings into chip_T frames")
    lo = max(int(config.T), int(config.scheme.data_T))
    if not (isinstance(config.chip_T, int) and not isinstance(config.chip_T, bool) and lo <= config.chip_T <= MAX_T):
        raise ConfigError("chip_T", config.chip_T, f"an integer in [{lo}, {MAX_T}] (at least the data's T "
                          f"{config.T}{' and the drawn input T max' if config.scheme.draws_input else ''})",
                          "e.g. --chip-T 100 (the chip acts like T~100 for a 300 ms recording)")
    if (config.qat or config.train_spike != "multi") and config.chip_backprop != "bptt":
        raise ConfigError("chip_backprop", config.chip_backprop, "bptt with --qat or --train-spike single",
                          "the chip-faithful forward replaces the neurons' time loop, as rate backprop does")


def train_data_T(config: Any) -> int:
    """Frames the training recordings are binned into: ``chip_T`` when the chip pass is on, else
    the scheme's ``data_T``."""
    return int(config.chip_T) if config.chip_T is not None else int(config.scheme.data_T)


def summed_batches(loader: Iterable, t: int) -> Iterator:
    """``loader``'s ``(x [B, T_data, C, H, W], y)`` batches with ``x`` summed into ``t`` frames
    (the TTM's even grouping), e.g. for BN calibration at the model's input T."""
    from flexsnn.training.schemes import input_frames

    for x, y in loader:
        yield input_frames(x.transpose(0, 1), int(t)).transpose(0, 1), y


@contextlib.contextmanager
def neuron_floor(model: nn.Module, floor: float) -> Iterator[nn.Module]:
    """Every :class:`~flexsnn.models.neurons.SpikingNeuron` of ``model`` with ``min_v_mem = floor``
    (threshold units) inside the block; each neuron's own config is restored on exit, also on error.

    Raises:
        ConfigError: ``floor`` not below a neuron's threshold.
    """
    from flexsnn.models.neurons import SpikingNeuron

    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    saved = [n.config for n in neurons]
    try:
        for n in neurons:
            n.config = dataclasses.replace(n.config, min_v_mem=float(floor))
        yield model
    finally:
        for n, c in zip(neurons, saved):
            n.config = c


class WeightedTask:
    """``weight * loss_fn(logits, y)`` (the chip pass's task loss)."""

    def __init__(self, loss_fn: Callable, weight: float) -> None:
        self.loss_fn, self.weight = loss_fn, float(weight)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.weight * self.loss_fn(logits, y)


class ChipConfigPass:
    """The chip pass of one training step, run by :func:`flexsnn.training.trainer.train_step`
    after the scheme's configurations (its gradient is summed with theirs).

    Args:
        tfsnn: the model being trained (its temporal configuration is set here).
        T: frames per stage (``chip_T``); floor: ``chip_floor`` for this pass only.
        loss_fn: the pass's loss (a :class:`~flexsnn.training.synops.BudgetedLoss` over a
            :class:`WeightedTask`, so the budget's hinge is added unweighted).
        step_fn: the trainer's step function for ``chip_backprop``
            (``(model, x, y, loss_fn, backward) -> (loss, logits)``).

    Call with ``(model, x [chip_T, B, C, H, W], y [B], backward)``; returns ``(loss, logits)``.
    :attr:`config` is the pass's temporal configuration ``(chip_T,) * stages``.
    """

    def __init__(self, tfsnn: nn.Module, *, T: int, floor: float, loss_fn: Callable, step_fn: Callable) -> None:
        self.tfsnn, self.floor, self.loss_fn, self.step_fn = tfsnn, float(floor), loss_fn, step_fn
        self.config: tuple[int, ...] = (int(T),) * int(tfsnn.num_stages)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 backward: Callable[[torch.Tensor], None]) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] != self.config[0]:
            raise ConfigError("chip pass input", tuple(x.shape), f"[{self.config[0]}, B, C, H, W] (chip_T frames)",
                              "bin the training data at chip_T (train_data_T)")
        self.tfsnn.set_temporal_config(self.config)
        with neuron_floor(self.tfsnn, self.floor):
            return self.step_fn(model, x, y, self.loss_fn, backward)


def build_chip_pass(tfsnn: nn.Module, config: Any, task_loss: Callable, meter: Any,
                    step_fn: Callable) -> ChipConfigPass | None:
    """The :class:`ChipConfigPass` of a TrainConfig (None when ``chip_T`` is unset): its loss is
    ``chip_weight * task_loss`` plus the SynOps budget on the shared ``meter``'s count."""
    if config.chip_T is None:
        return None
    from flexsnn.training.synops import BudgetedLoss

    loss = BudgetedLoss(WeightedTask(task_loss, config.chip_weight), meter, config.synops_budget, config.synops_weight)
    return ChipConfigPass(tfsnn, T=config.chip_T, floor=config.chip_floor, loss_fn=loss, step_fn=step_fn)
