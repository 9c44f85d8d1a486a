"""Training losses over the output sequence of a spiking network.

Every loss takes the readout logits of all output time steps, ``logits`` float ``[T, B, K]``
(T output steps, B samples, K classes; T may change from call to call, as it does under mixed
time-step training), and the integer labels ``target`` int64 ``[B]``, and returns a scalar tensor.

Losses (``build_loss(name, **params)``):

``"ce"``  SDT's mean-CE, ``CE(mean_t O_t, y)``: cross entropy of the time-averaged logits. This is the
          convention of the MTT code (brain-intelligence-lab/temporal_flexibility_in_SNN, ``SNN_Loss``
          applies ``CrossEntropyLoss`` to ``output.mean(dim=T)``) and of TET/TMC's "SDT" baseline.
``"ce-step"`` the per-step mean, ``mean_t CE(O_t, y)`` (TET with λ = 0), offered for comparison.
``"tet"`` TET (Deng et al., ICLR 2022): ``(1-λ)·mean_t CE(O_t, y) + λ·MSE(O, φ)``; the MSE is the mean
          over every element of ``O`` ``[T, B, K]`` against the constant φ. Defaults λ = 1e-3, φ = 1.
``"tmc"`` TMC (temporal model calibration, ICML 2025): for t = 0..T-1 the cumulative-mean logits
          ``Ō_t = (Σ_{i<t} O_i.detach() + O_t) / (t+1)`` (earlier steps detached, so the step-t terms
          send gradient only into O_t), ``p_t = softmax(Ō_t)``, ``conf_t`` = batch mean of
          ``p_t[target]``, ``θ_t = conf_t / (1 - conf_t)``, ``λ_t = (T - t)/T`` and
          ``loss = mean_t [ CE(O_t, y) + θ_t^λ_t ]``. As in the authors' code (zju-bmi-lab/TMC,
          ``TMC_loss``) the CE term is the per-step ``CE(O_t, y)`` of the raw step logits, and
          ``1 - conf_t`` is computed as the batch mean of the probability mass on the other classes.

Numerical safety (TMC): the other-class mass is computed as ``exp(logsumexp(others) - logsumexp(all))``,
which is exact to float precision even when it is far below float eps (no ``1 - conf`` cancellation),
and is clamped from below at ``eps`` (default 1e-6). So θ_t ≤ (1/eps) and the loss stays finite
(≤ 1e6 per step at λ_t = 1) for any logits, including conf_t == 1 in float; while clamped, the
denominator sends no gradient (the numerator still does). θ_t is also clamped from below at
``eps``, because ``d θ^λ / d θ = λ θ^(λ-1)`` is infinite at θ = 0 (conf_t underflowing to 0). With K = 1 there are no other classes and the
denominator is eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from flexsnn.errors import ConfigError

__all__ = [
    "LOSSES",
    "LossFn",
    "MeanCELoss",
    "StepCELoss",
    "TETLoss",
    "TMCLoss",
    "build_loss",
    "check_logits",
]

LOSSES: tuple[str, ...] = ("ce", "tet", "tmc", "ce-step")
"""Names accepted by :func:`build_loss` (``--loss``)."""


class LossFn(Protocol):
    """A loss over the output sequence: ``(logits [T, B, K] float, target [B] int64) -> scalar``."""

    name: str

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


def check_logits(logits: torch.Tensor, target: torch.Tensor, *, where: str = "loss") -> None:
    """Raise :class:`ConfigError` unless ``logits`` is float ``[T, B, K]`` and ``target`` int ``[B]``."""
    if logits.dim() != 3:
        raise ConfigError(
            f"{where}.logits", tuple(logits.shape), "a [T, B, K] tensor (time first)",
            hint="pass the model's full output sequence, not its time mean",
        )
    if not torch.is_floating_point(logits):
        raise ConfigError(f"{where}.logits", str(logits.dtype), "a floating-point tensor")
    if target.dim() != 1 or target.shape[0] != logits.shape[1]:
        raise ConfigError(
            f"{where}.target", tuple(target.shape), f"an int64 tensor of shape [B] = [{logits.shape[1]}]",
        )
    if torch.is_floating_point(target):
        raise ConfigError(f"{where}.target", str(target.dtype), "integer class labels (int64)")
    if logits.shape[0] < 1:
        raise ConfigError(f"{where}.logits", tuple(logits.shape), "at least one time step (T >= 1)")


def _per_step_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_t CE(O_t, y)`` computed in one call (time folded into the batch)."""
    t_out, batch, k = logits.shape
    return F.cross_entropy(logits.reshape(t_out * batch, k), target.repeat(t_out))


@dataclass(frozen=True)
class MeanCELoss:
    """SDT's mean-CE: ``CE(mean_t O_t, y)`` (cross entropy of the time-averaged logits)."""

    name: str = "ce"

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, target, where="ce")
        return F.cross_entropy(logits.mean(dim=0), target)


@dataclass(frozen=True)
class StepCELoss:
    """Per-step mean CE: ``mean_t CE(O_t, y)`` (TET without its MSE term)."""

    name: str = "ce-step"

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, target, where="ce-step")
        return _per_step_ce(logits, target)


@dataclass(frozen=True)
class TETLoss:
    """TET: ``(1-lam)·mean_t CE(O_t, y) + lam·MSE(O, phi)``.

    Attributes:
        lam: weight λ of the MSE regulariser, in [0, 1] (default 1e-3 as in TET's code).
        phi: constant target φ of the logits in the MSE term (default 1.0).
    """

    lam: float = 1e-3
    phi: float = 1.0
    name: str = "tet"

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError("loss.lam", self.lam, "a weight in [0, 1]", hint="TET uses lam=1e-3")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, target, where="tet")
        ce = _per_step_ce(logits, target)
        if self.lam == 0.0:
            return ce
        mse = F.mse_loss(logits, torch.full_like(logits, self.phi))
        return (1.0 - self.lam) * ce + self.lam * mse


@dataclass(frozen=True)
class TMCLoss:
    """TMC: ``mean_t [ CE(O_t, y) + θ_t^λ_t ]`` with θ_t from the cumulative-mean logits.

    Attributes:
        eps: lower clamp of the batch-mean other-class probability ``1 - conf_t`` (default 1e-6),
            which bounds θ_t by 1/eps so the loss is finite when conf_t reaches 1.
    """

    eps: float = 1e-6
    name: str = "tmc"

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ConfigError("loss.eps", self.eps, "a clamp value in (0, 1)", hint="default 1e-6")

    def cumulative_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``Ō_t = (Σ_{i<t} O_i.detach() + O_t)/(t+1)`` for every t, float ``[T, B, K]``."""
        t_out = logits.shape[0]
        detached = logits.detach()
        past = torch.cumsum(detached, dim=0) - detached  # Σ_{i<t} O_i, no gradient
        counts = torch.arange(1, t_out + 1, dtype=logits.dtype, device=logits.device).view(t_out, 1, 1)
        return (past + logits) / counts

    def regulariser(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-step terms ``θ_t^λ_t``, float ``[T]``."""
        t_out, _, k = logits.shape
        cum = self.cumulative_logits(logits)
        log_p = torch.log_softmax(cum, dim=-1)  # [T, B, K]
        idx = target.view(1, -1, 1).expand(t_out, -1, 1)
        conf = log_p.gather(-1, idx).squeeze(-1).exp().mean(dim=1)  # [T]
        if k > 1:
            other_mask = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, idx, False)
            log_other = torch.logsumexp(log_p.masked_fill(~other_mask, float("-inf")), dim=-1)  # [T, B]
            other = log_other.exp().mean(dim=1)  # [T] = 1 - conf_t without cancellation
        else:
            other = torch.zeros_like(conf)
        # clamp both ends: conf_t -> 1 makes 1-conf_t vanish; conf_t -> 0 makes d(θ^λ)/dθ infinite
        theta = (conf / other.clamp_min(self.eps)).clamp_min(self.eps)
        lam_t = (t_out - torch.arange(t_out, dtype=logits.dtype, device=logits.device)) / t_out
        return theta.pow(lam_t)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits(logits, target, where="tmc")
        return _per_step_ce(logits, target) + self.regulariser(logits, target).mean()


_BUILDERS = {"ce": MeanCELoss, "ce-step": StepCELoss, "tet": TETLoss, "tmc": TMCLoss}


def build_loss(name: str, **params: float) -> LossFn:
    """Build the loss called ``name`` (one of :data:`LOSSES`) with keyword ``params``.

    ``"tet"`` takes ``lam`` (default 1e-3) and ``phi`` (1.0); ``"tmc"`` takes ``eps`` (1e-6);
    ``"ce"`` and ``"ce-step"`` take none. Unknown names or parameters raise :class:`ConfigError`.
    """
    key = name.lower().replace("_", "-")
    if key not in _BUILDERS:
        raise ConfigError("loss", name, f"one of {', '.join(LOSSES)}", hint="e.g. --loss tmc")
    cls = _BUILDERS[key]
    allowed = {f for f in cls.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"loss.{unknown[0]}", params[unknown[0]],
            f"a parameter of loss {key!r}: {sorted(allowed) or 'none'}",
        )
    return cls(**params)
