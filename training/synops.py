"""SynOps of a Speck net, estimated from its spikes during training (and a budget on them).

A *SynOp* is one weight applied by one incoming event, counted at the receiving layer, exactly
as the chip backends count them (:mod:`flexsnn.deploy.time_binned`, :mod:`flexsnn.deploy.async_sim`):
an event at input position ``(y, x)`` of a conv layer reaches ``c_out * rows(y) * cols(x)``
neurons, where ``rows``/``cols`` count the output positions whose kernel window covers it
(zero padding and stride included); a linear layer (a conv whose kernel is the whole input map
on the chip) reaches ``out_features`` neurons per input. So for one layer::

    synops = sum_{t, c, y, x} inputs[t, c, y, x] * fanout[y, x]

with ``inputs`` the layer's input event counts (the input frames for the first layer, the
sum-pooled spikes of the previous layer otherwise). The estimate is a differentiable function
of the spike counts (their surrogate gradient), so it can be penalised: :func:`synops_penalty`
is the hinge ``relu(S / budget - 1)`` on the mean SynOps per sample ``S``.

Under rate-based backprop the spike pass runs without autograd and the rate pass sees each
layer's *time-mean* input ``r_l [B, C, H, W]``; its count is exact but scaled by the stage's T.
:meth:`BudgetedLoss.rate_penalty` therefore takes each layer's value from the spike pass
(``S_l``) and its gradient from the rate pass (``R_l = sum r_l * fanout``):
``S = sum_l (S_l / R_l) * R_l`` with the ratio detached, so S equals the spike count and
``dS/dr_l = (S_l / R_l) * fanout`` (the ratio is the stage's T wherever the pass is exact).

Energy: SynOps times an energy per SynOp (pJ). No default is given here: the Speck2e's
per-SynOp energy is not published in a form we could check (see README), so the user must
pass ``--pj-per-synop`` to get an energy figure.

Layers (``torch`` only): this module is imported by the trainer; the deploy backends keep their
own count, and tests/test_synops.py checks the two agree on exported images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from flexsnn.errors import ConfigError


def _reach(n_in: int, n_out: int, k: int, stride: int, pad: int) -> torch.Tensor:
    """For each input index, how many output indices' kernel windows cover it, ``[n_in]``."""
    pos = torch.arange(n_in)[:, None]
    o = torch.arange(n_out)[None, :]
    kk = pos + pad - o * stride
    return ((kk >= 0) & (kk < k)).sum(dim=1)


def conv_fanout(conv: nn.Conv2d, h_in: int, w_in: int) -> torch.Tensor:
    """SynOps one input event at ``(y, x)`` causes in ``conv``: float64 ``[h_in, w_in]``."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = conv.padding
    h_out = (h_in + 2 * ph - kh) // sh + 1
    w_out = (w_in + 2 * pw - kw) // sw + 1
    rows = _reach(h_in, h_out, kh, sh, ph)
    cols = _reach(w_in, w_out, kw, sw, pw)
    return (conv.out_channels * torch.outer(rows, cols)).to(torch.float64)


@dataclass
class SynOpsMeter:
    """Records the SynOps of every forward of ``model`` while active (a context manager).

    Forward pre-hooks on each ``nn.Conv2d`` / ``nn.Linear`` add ``sum(input * fanout)`` over
    the folded ``[T*B, ...]`` input (time and batch together). Read and clear with :meth:`pop`.

    Attributes:
        total: differentiable sum since the last :meth:`pop` (a tensor, or 0.0).
        per_layer: detached totals per layer name since the last :meth:`pop`.
        layer_ops: the same totals as tensors (differentiable where the forward was), cleared by
            :meth:`pop`.
    """

    model: nn.Module
    total: torch.Tensor | float = 0.0
    per_layer: dict[str, float] = field(default_factory=dict)
    layer_ops: dict[str, torch.Tensor] = field(default_factory=dict)
    _handles: list = field(default_factory=list)
    _fanouts: dict = field(default_factory=dict)

    def __enter__(self) -> "SynOpsMeter":
        for name, m in self.model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self._handles.append(m.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs) -> None:
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                key = (name, tuple(x.shape[-2:]))
                fan = self._fanouts.get(key)
                if fan is None or fan.device != x.device:
                    fan = self._fanouts[key] = conv_fanout(module, x.shape[-2], x.shape[-1]).to(x.device)
                # float64: a batch's total passes 2^24, where float32 stops counting exactly
                ops = (x.sum(dim=tuple(range(x.dim() - 2))).double() * fan).sum()
            else:
                ops = x.sum(dim=0).double().sum() * float(module.out_features)
            self.total = self.total + ops
            self.per_layer[name] = self.per_layer.get(name, 0.0) + float(ops.detach())
            self.layer_ops[name] = self.layer_ops[name] + ops if name in self.layer_ops else ops
        return hook

    def pop(self) -> tuple[torch.Tensor | float, dict[str, float]]:
        """``(total, per_layer)`` since the last pop; both are cleared."""
        out = (self.total, dict(self.per_layer))
        self.total, self.per_layer, self.layer_ops = 0.0, {}, {}
        return out


def synops_penalty(per_sample: torch.Tensor, budget: float) -> torch.Tensor:
    """Hinge ``relu(S / budget - 1)`` on the mean SynOps per sample ``S`` (0 within budget)."""
    return torch.relu(per_sample / float(budget) - 1.0)


def check_budget_options(budget: Optional[float], weight: float) -> None:
    """Validate the trainer's ``synops_budget`` / ``synops_weight`` (ConfigError with a fix)."""
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
        raise ConfigError("synops_budget", budget, "a positive number of SynOps per sample or None",
                          "e.g. --synops-budget 1.5e6")
    if not weight >= 0:
        raise ConfigError("synops_weight", weight, ">= 0")


class BudgetedLoss:
    """``loss_fn`` plus ``weight * relu(S / budget - 1)``, S from the meter's forward.

    Call with ``(logits [T, B, K], y [B])``; the meter must have recorded exactly that forward.
    Keeps running sums of the SynOps per sample for the epoch's metrics (:meth:`epoch_mean`).
    """

    def __init__(self, loss_fn: Callable, meter: SynOpsMeter, budget: Optional[float], weight: float = 1.0) -> None:
        self.loss_fn, self.meter, self.budget, self.weight = loss_fn, meter, budget, float(weight)
        self._sum, self._n = 0.0, 0
        self._spike_layers: dict[str, float] = {}
        self._batch = 1

    @property
    def active(self) -> bool:
        """True when the budget adds a penalty (a budget and a weight > 0)."""
        return self.budget is not None and self.weight != 0

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(logits, y)
        total, self._spike_layers = self.meter.pop()
        self._batch = max(int(y.numel()), 1)
        if not torch.is_tensor(total):
            return loss
        per_sample = total / self._batch
        self._sum += float(per_sample.detach())
        self._n += 1
        if not self.active:
            return loss
        return loss + self.weight * synops_penalty(per_sample, self.budget)

    def rate_penalty(self) -> Optional[torch.Tensor]:
        """The budget's term for rate-based backprop, called after the rate pass (the meter holds
        that pass's per-layer counts; :meth:`__call__` saw the spike pass's): the hinge on
        ``S = sum_l (S_l / R_l) R_l`` (see module docstring; a layer whose rate count has no
        gradient, such as the first, adds its ``S_l`` as a constant), a scalar whose value is the
        spike pass's penalty and whose gradient flows through the rate pass. None without a
        budget or when no layer's count carries a gradient."""
        rate_layers = self.meter.layer_ops
        self.meter.pop()
        if not self.active:
            return None
        total: torch.Tensor | float = 0.0
        for name, spike_ops in self._spike_layers.items():
            ops = rate_layers.get(name)
            if torch.is_tensor(ops) and ops.requires_grad and float(ops.detach()) > 0:
                total = total + ops.double() * (spike_ops / float(ops.detach()))
            else:  # e.g. the first layer: its input is the data, a constant
                total = total + spike_ops
        if not (torch.is_tensor(total) and total.requires_grad):
            return None
        return self.weight * synops_penalty(total / self._batch, self.budget)

    def epoch_mean(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Optional[float]:
        """Mean SynOps per sample over the forwards since the last call (then reset).

        ``reduce``: sums a ``[2]`` float64 tensor (SynOps, samples) over the ranks of a distributed
        run (the trainer's ``context.all_reduce``), so every rank reports the global mean."""
        sums = torch.tensor([self._sum, float(self._n)], dtype=torch.float64)
        self._sum, self._n = 0.0, 0
        if reduce is not None:
            sums = reduce(sums)
        return float(sums[0] / sums[1]) if sums[1] else None


@torch.no_grad()
def synops_per_sample(model: nn.Module, batches, *, config=None) -> float:
    """Mean estimated SynOps per sample of ``model`` (eval mode) on ``(x [B, T, C, H, W], y)``
    batches at ``config`` (uniform T or per-stage tuple; None = the model's current one)."""
    from flexsnn.data.frames import to_time_major

    if config is not None:
        model.set_uniform(config) if isinstance(config, int) else model.set_temporal_config(config)
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with SynOpsMeter(model) as meter:
        for x, y in batches:
            model(to_time_major(x).float())
            t, _ = meter.pop()
            total += float(t)
            n += int(y.numel())
    model.train(was)
    return total / max(n, 1)


def energy_uj(synops: float, pj_per_synop: Optional[float]) -> Optional[float]:
    """Energy in µJ of ``synops`` SynOps at ``pj_per_synop`` pJ each (None when not given)."""
    if pj_per_synop is None:
        return None
    if not pj_per_synop > 0:
        raise ConfigError("pj_per_synop", pj_per_synop, "a positive number of pJ", "or leave it unset")
    return float(synops) * float(pj_per_synop) * 1e-6
