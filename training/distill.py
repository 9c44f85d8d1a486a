"""Knowledge distillation from a frozen teacher checkpoint (Hinton et al., 2015, "Distilling the
Knowledge in a Neural Network", arXiv:1503.02531), for the chip fine-tune (issue 15).

The bias-free fine-tune for the chip (MTT, deeper floor, SynOps budget) starts from an SDT+BN
model that is more accurate at its own T than the fine-tune keeps. With ``distill_checkpoint``
that model (or any other checkpoint with the same classes) is the teacher: every training
batch ``x [T_data, B, C, H, W]`` is run once through the teacher at ``T`` (the input frames
summed into ``T`` as the TTM groups them), and each configuration's loss becomes::

    loss = task_loss(logits, y) + weight * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))

with ``z`` the output spike counts of the whole sample (logits ``[T_out, B, K]`` summed over
time) divided by the teacher's ``T``: for the teacher the time mean the ``ce`` loss classifies;
for a student whose output stage runs at another T the same count scale (an IAF's count over a
sample barely depends on how finely it is binned, its per-step mean does). So students at any
temporal configuration are pulled to the teacher's full-T output distribution.
The teacher runs without gradients, in eval mode, outside the SynOps meter and the chip forward.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flexsnn.errors import ConfigError


def check_distill_options(checkpoint: str | None, weight: float, temperature: float, backprop: str) -> None:
    """Validate the trainer's ``distill_*`` settings (ConfigError with a fix)."""
    if not (isinstance(weight, (int, float)) and weight >= 0):
        raise ConfigError("distill_weight", weight, "a number >= 0", "e.g. --distill-weight 1")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ConfigError("distill_temperature", temperature, "a number > 0", "e.g. --distill-temperature 2")
    if checkpoint is not None and backprop != "bptt":
        raise ConfigError("distill_checkpoint", checkpoint, "None with rate-based backprop",
                          "the rate pass builds its own loss; use --backprop bptt")


def distill_loss(student: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
                 teacher_T: int) -> torch.Tensor:
    """``tau^2 * KL(teacher || softmax(sum_t student / teacher_T / tau))``, batch mean.

    Args:
        student: logits ``[T_out, B, K]`` (any ``T_out``).
        teacher_probs: ``softmax(mean_t z_teacher / tau)`` ``[B, K]``.
        teacher_T: the teacher's T (the student's counts are put on its per-step scale).
    """
    log_p = F.log_softmax(student.float().sum(0) / float(teacher_T) / float(temperature), dim=-1)
    return F.kl_div(log_p, teacher_probs, reduction="batchmean") * float(temperature) ** 2


class Distiller:
    """Teacher soft targets for one batch and the loss that adds them.

    Args:
        teacher: the teacher model (a TFSNN, :func:`flexsnn.models.checkpoint.load_model`).
        T: the teacher's T (frames per sample, every stage).
        weight, temperature: as in the module docstring.
    """

    def __init__(self, teacher: nn.Module, *, T: int, weight: float, temperature: float) -> None:
        self.teacher, self.T, self.weight, self.temperature = teacher.eval(), int(T), float(weight), float(temperature)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path: str, *, T: int, weight: float, temperature: float,
                        device: torch.device | str = "cpu") -> "Distiller":
        from flexsnn.models.checkpoint import load_model

        model, _ = load_model(path)
        return cls(model.to(device), T=T, weight=weight, temperature=temperature)

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """``softmax(mean_t teacher(x) / tau)`` ``[B, K]`` for ``x [T_data, B, C, H, W]``."""
        from flexsnn.training.schemes import input_frames

        self.teacher.set_uniform(self.T)
        logits = self.teacher(input_frames(x.float(), self.T))
        return F.softmax(logits.float().mean(0) / self.temperature, dim=-1)

    def loss_for(self, loss_fn: Callable, x: torch.Tensor) -> Callable:
        """``loss_fn`` plus the distillation term against the teacher's targets on ``x``."""
        probs = self.targets(x)

        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss_fn(logits, y) + self.weight * distill_loss(logits, probs, self.temperature, self.T)

        return loss
