"""One optimizer step of the trainer and the hooks a distributed run overrides.

:func:`train_step` runs a scheme's temporal configurations on one batch, each through a *step
function* (:func:`get_step_fn`: BPTT or rate-based backprop) that computes the loss and
accumulates gradients, then takes one optimizer step (the MTT paper's Algorithm 1: the
configurations' gradients are summed). :class:`RunContext` holds the single-process defaults of
the hooks (:mod:`flexsnn.training.distributed` overrides them). :mod:`flexsnn.training.trainer`
re-exports every name here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.training.schemes import input_frames


# =========================================================================== distributed hooks
class RunContext:
    """Single-process defaults of the hooks a distributed wrapper overrides."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, logs and progress."""
        return self.rank == 0

    def shard(self, order: list[int]) -> list[int]:
        """This rank's part of the epoch's global sample order (default: all of it)."""
        return order

    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Context around one configuration's backward; DDP skips the all-reduce unless ``last``."""
        return contextlib.nullcontext()

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over ranks (metric sums); identity for one process."""
        return values

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """E.g. ``DistributedDataParallel(model)``; identity here."""
        return model

    # -- added by the distributed helper (flexsnn.training.distributed.DistributedContext) --
    def sync_bn(self, model: nn.Module, seen: int) -> int:
        """Combine BN statistics each rank calibrated over ``seen`` of its batches (all-reduce
        weighted by batch counts); identity for one process. Returns the total batch count."""
        return seen


# =========================================================================== step functions
Backward = Callable[[torch.Tensor], None]
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Callable, Backward], tuple[torch.Tensor, torch.Tensor]]


def bptt_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
              backward: Backward) -> tuple[torch.Tensor, torch.Tensor]:
    """Backprop through time for the model's current configuration.

    ``x`` float ``[T, B, C, H, W]``, ``y`` int64 ``[B]``; calls ``backward(loss)`` (which
    accumulates into ``.grad``) and returns the detached ``(loss, logits [T_out, B, K])``.
    """
    logits = model(x)
    loss = loss_fn(logits.float(), y)
    backward(loss)
    return loss.detach(), logits.detach()


def _rate_step(mode: str) -> StepFn:
    def rate_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
                  backward: Backward) -> tuple[torch.Tensor, torch.Tensor]:
        """Rate-based backprop (:func:`flexsnn.training.rate_backprop.rate_loss_and_backward`)
        in ``mode``; it runs its own single backward, so ``backward`` is unused. A loss with a
        ``rate_penalty`` (the SynOps budget) gets it added to the rate pass's backward."""
        from flexsnn.training.rate_backprop import rate_loss_and_backward

        res = rate_loss_and_backward(model, x, y, loss_fn, mode=mode,
                                     extra_loss=getattr(loss_fn, "rate_penalty", None))
        return res.loss, res.logits

    rate_step.__name__ = f"rate_step_{mode}"
    return rate_step


#: rate_M (multi-step) keeps the T spike-pass steps' inputs; rate_S (single-step) accumulates
#: eligibility step by step, so its memory does not grow with T.
rate_step = _rate_step("rate_M")
STEP_FNS: dict[str, StepFn] = {"bptt": bptt_step, "rate": rate_step, "rate_M": rate_step,
                               "rate_S": _rate_step("rate_S")}


def get_step_fn(backprop: str) -> StepFn:
    """The per-configuration step function for ``backprop`` (one of :data:`BACKPROPS`)."""
    if backprop not in STEP_FNS:
        raise ConfigError("backprop", backprop, f"one of {', '.join(STEP_FNS)}")
    return STEP_FNS[backprop]


@dataclass
class StepStats:
    """Sums over one step's configurations: ``loss_sum`` (sum of per-config losses),
    ``correct`` / ``seen`` (samples × configurations), ``configs``."""

    loss_sum: float
    correct: int
    seen: int
    configs: list[tuple[int, ...]]


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, configs: Sequence[tuple[int, ...]],
               loss_fn: Callable, step_fn: StepFn, optimizer: torch.optim.Optimizer, *,
               scaler: Any = None, autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
               context: RunContext | None = None, grad_clip: float | None = None,
               tfsnn: nn.Module | None = None, resample_input: bool = False,
               chip_pass: Callable | None = None) -> StepStats:
    """One optimizer step over ``configs`` (gradients summed, one ``optimizer.step()``).

    Args:
        model: the module to run (possibly DDP-wrapped).
        x: float ``[T, B, C, H, W]`` (time first), y: int64 ``[B]``.
        configs: temporal configurations, one forward/backward each.
        tfsnn: the underlying TFSNN whose configuration is set (default: ``model``).
        resample_input: sum ``x``'s frames into each configuration's input T (drawn input T).
        chip_pass: run after ``configs`` on the full ``x`` (a
            :class:`~flexsnn.training.chip_config.ChipConfigPass`); counted in the stats.
    """
    context = context or RunContext()
    tfsnn = tfsnn if tfsnn is not None else model
    autocast = autocast or contextlib.nullcontext
    optimizer.zero_grad(set_to_none=True)

    def backward(loss: torch.Tensor) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def scheme_pass(cfg: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        tfsnn.set_temporal_config(cfg)
        return step_fn(model, input_frames(x, cfg[0]) if resample_input else x, y, loss_fn, backward)

    passes = [(tuple(c), lambda c=tuple(c): scheme_pass(c)) for c in configs]
    if chip_pass is not None:  # sets its own configuration and floor, on the full x
        passes.append((chip_pass.config, lambda: chip_pass(model, x, y, backward)))
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (_cfg, run) in enumerate(passes):
        with context.no_sync(model, last=(i == len(passes) - 1)):
            with autocast():
                loss, logits = run()
        loss_sum += float(loss)
        correct += int((logits.float().sum(0).argmax(-1) == y).sum())
        seen += int(y.numel())
    if scaler is not None:
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return StepStats(loss_sum=loss_sum, correct=correct, seen=seen, configs=[c for c, _ in passes])


__all__ = ["RunContext", "Backward", "StepFn", "bptt_step", "rate_step", "STEP_FNS", "get_step_fn",
           "StepStats", "train_step"]
