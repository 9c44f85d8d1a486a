"""The trainer's chip-faithful parts in one object: SynOps meter and budget, fake quantization,
single-spike neurons, the chip's configuration in every step (issue 15). :class:`ChipSession` is built once per run by
:func:`flexsnn.training.trainer.train`; with the defaults it only measures SynOps.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.training.chip_config import ChipConfigPass, build_chip_pass, check_chip_config_options
from flexsnn.training.qat import SPIKES, chip_forward
from flexsnn.training.distill import Distiller, check_distill_options
from flexsnn.training.synops import BudgetedLoss, SynOpsMeter, check_budget_options


def check_chip_options(config: Any) -> None:
    """Validate ``qat``, ``train_spike``, ``synops_budget``, ``synops_weight`` and the chip pass's
    ``chip_*`` fields of a TrainConfig."""
    if config.train_spike not in SPIKES:
        raise ConfigError("train_spike", config.train_spike, f"one of {', '.join(SPIKES)}")
    if not isinstance(config.qat, bool):
        raise ConfigError("qat", config.qat, "true or false")
    if (config.qat or config.train_spike != "multi") and config.backprop != "bptt":
        raise ConfigError("backprop", config.backprop, "bptt with --qat or --train-spike single",
                          "the chip-faithful forward replaces the neurons' time loop, as rate backprop does")
    check_budget_options(config.synops_budget, config.synops_weight)
    check_distill_options(config.distill_checkpoint, config.distill_weight, config.distill_temperature,
                          config.backprop)
    check_chip_config_options(config)


class ChipSession:
    """Wraps the loss (SynOps budget), the training batches (chip forward + meter) and the test
    evaluation (accuracy and SynOps per sample) of one training run.

    Args:
        model: the TFSNN being trained.
        config: its :class:`~flexsnn.training.trainer.TrainConfig`.
        loss_fn: the task loss ``(logits [T, B, K], y [B]) -> scalar``.
        device: where the distillation teacher runs (with ``config.distill_checkpoint``).
    """

    def __init__(self, model: nn.Module, config: Any, loss_fn: Callable, device: Any = "cpu") -> None:
        self.model, self.config = model, config
        self.meter = SynOpsMeter(model)
        # under rate backprop the loss sees the spike pass's counts; the rate pass's counts
        # carry the gradient (BudgetedLoss.rate_penalty, called by the rate step)
        self.loss = BudgetedLoss(loss_fn, self.meter, config.synops_budget, config.synops_weight)
        self.distiller = None if config.distill_checkpoint is None else Distiller.from_checkpoint(
            config.distill_checkpoint, T=config.T, weight=config.distill_weight,
            temperature=config.distill_temperature, device=device)
        self.chip_pass: ChipConfigPass | None = None

    def config_pass(self, step_fn: Callable) -> ChipConfigPass | None:
        """The chip pass of every step (``config.chip_T`` set; None otherwise), trained by
        ``step_fn``: ``chip_weight`` x the task loss (no distillation term) plus the budget."""
        self.chip_pass = build_chip_pass(self.model, self.config, self.loss.loss_fn, self.meter, step_fn)
        return self.chip_pass

    def loss_for(self, x: Any) -> Callable:
        """The loss of the batch ``x [T_data, B, C, H, W]``: :attr:`loss`, plus the distillation
        term against the teacher's soft targets on ``x`` when a teacher is set."""
        return self.loss if self.distiller is None else self.distiller.loss_for(self.loss, x)

    def _forward_context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return chip_forward(model, quantize=self.config.qat, spike=self.config.train_spike)

    def batches(self, loader: Iterable) -> Iterator:
        """Yield ``loader``'s batches with the meter and the chip forward active."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.meter)
            self.meter.pop()
            stack.enter_context(self._forward_context(self.model))
            yield from loader

    def epoch_metrics(self, reduce: Callable | None = None) -> dict[str, float]:
        """``{"synops_per_sample": mean over the epoch's forwards of the scheme's configurations}``
        (empty before any), plus ``chip_synops_per_sample`` (the chip pass's) when it runs;
        ``reduce`` sums over the ranks of a distributed run."""
        mean = self.loss.epoch_mean(reduce)
        out = {} if mean is None else {"synops_per_sample": mean}
        chip = self.chip_pass.loss_fn.epoch_mean(reduce) if self.chip_pass is not None else None
        return out if chip is None else {**out, "chip_synops_per_sample": chip}

    def evaluate(self, model: nn.Module, accuracy_fn: Callable[[nn.Module], float], *, n: int) -> dict[str, float]:
        """``accuracy_fn(model)`` under the chip forward, with the SynOps per sample of that pass
        (``n`` = test samples): ``{"test_acc", "test_synops_per_sample"}``."""
        with SynOpsMeter(model) as meter, self._forward_context(model):
            acc = accuracy_fn(model)
            total, _ = meter.pop()
        return {"test_acc": float(acc), "test_synops_per_sample": float(total) / max(int(n), 1)}
