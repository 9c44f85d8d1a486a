"""Rate-based backpropagation (Yu et al., NeurIPS 2024): memory that does not grow with T.

One training step for one temporal configuration, :func:`rate_loss_and_backward`:

1. **Spike pass** (``torch.no_grad``): the model runs its T steps exactly as in BPTT's forward,
   while every :class:`~flexsnn.models.neurons.SpikingNeuron` (through its ``strategy`` hook)
   keeps, per neuron, its mean spike rate ``r = mean_t s_t`` and its eligibility trace
   ``e = mean_t surrogate'(v_t) * k_t``, where ``k_t = d v_t / d x`` is the sensitivity of the
   integrated potential to a constant input, ``k_0 = 1``, ``k_{t+1} = 1 + decay * k_t * du_t/dv_t``
   with the reset's derivative ``du/dv``:

   =====================  ======================================  ===========================
   reset                   ``du/dv`` (reset spike not detached)    ``detach_reset=True``
   =====================  ======================================  ===========================
   hard ``u = v(1-s)``     ``(1 - s) - v * surrogate'(v)``         ``1 - s``
   subtract ``u = v-sVth`` ``1 - Vth * surrogate'(v)``             ``1``
   =====================  ======================================  ===========================

   times ``1[u > min_v_mem]`` when the neuron clamps its potential (speck-iaf: ``min_v_mem=-1``,
   the derivative of sinabs' ``relu(u - m) + m``). Our neurons do not detach the reset, so the
   default (``detach_reset=False``) is the factor that matches their BPTT gradient; the paper's
   cheaper detached factors are available. So ``e = d r / d x`` for a constant input, the
   "rate-coding" assumption; at T = 1 it is exactly BPTT's ``surrogate'(v_0)``.
   BatchNorm layers record the batch mean and (biased) variance of their spike-pass input;
   their running statistics are updated here, once, by the normal forward.

2. **Loss**: computed on the spike pass's logits ``O [T, B, K]`` (any :mod:`flexsnn.training.losses`
   loss); ``g_t = dL/dO_t``. Under the rate approximation every step's output has the gradient
   path of the mean output ``ō``, so the rate pass is driven by ``Σ_t g_t`` (for mean-CE this is
   exactly ``dL/dō``; this is also how the paper's single-step mode sums its per-step gradients),
   scaled by ``1/T`` (``T`` = the output's number of steps) as the official code does
   (``CustomEvaluator`` in Tab-ct/rate-based-backpropagation keeps the loss value and divides its
   gradient by the model's time step). ``grad_scale="1"`` drops that factor (flexsnn < 0.2).

3. **Rate pass** (autograd, one step): the time-averaged input goes through the same layers once.
   Each neuron returns ``r`` as value (its true mean rate) with gradient path ``x * e``
   (``r.detach() + x*e - (x*e).detach()``). Each BN layer normalises with the spike pass's
   statistics as value while the gradient flows through the rate pass's own batch statistics,
   and does not touch its running statistics. Then one backward; gradients accumulate in
   ``.grad`` like ``loss.backward()``.

Values in the rate pass are exact time means wherever the layers are linear (conv, linear, sum/avg
pooling, residual adds, BN given its statistics), so no step is ever stored with autograd.

**TFSNN with per-stage T (MTT).** During the rate pass every stage runs at T = 1. Between stages
a TTM maps ``T_{i-1}`` frames to ``T_i`` frames; it is linear in time, so the mean of its output
is ``Σ_j w_j s_j`` with weights set by its groups. Downsampling *sums* frames, so the mean input
rate of stage i is ``T_{i-1}/T_i`` times the mean output rate of stage i-1; copying (upsampling)
and trimming keep the scale. The rate pass therefore gives stage i, as value, the true mean of its
TTM-transformed input (recorded in the spike pass, so uneven groups and trimmed frames are exact)
and, as gradient path, ``c_i`` times stage i-1's rate output, with
``c_i = mean_t' TTM(ones(T_{i-1}))_t'`` (= ``T_{i-1}/T_i`` for an even downsample, 1 for copy or
trim): the derivative of the TTM's mean output when all input frames carry the same rate.

**Modes.** ``rate_M`` (multi-step): the spike pass is one multi-step forward. ``rate_S``
(single-step): the spike pass feeds one frame at a time (neuron state carried between calls, BN
normalising each step with that step's batch statistics, which is what a single-step network
computes). The rate pass then normalises with the mean over steps of the per-step means and,
as the official code's ``bn_forward_hook`` (``in_spikes_var_recip``), the harmonic mean of the
per-step variances: ``var = 1 / mean_t(1 / (var_t + eps))``, used as ``sqrt(var + eps)`` (the
official ``calcu_rate`` adds ``eps`` again). The official hook tests ``in_spikes_var`` (never set
in single-step mode) before averaging, so it in fact keeps the last step's reciprocal only; we
implement the average it writes out. rate_M uses the variance of the whole ``[T*B, ...]`` batch.
With a uniform temporal configuration rate_S streams the input frame by frame through the whole
network, so only the input sequence scales with T; with per-stage T it goes stage by stage
(each stage fed one step at a time from the TTM of the previous stage's outputs). Without BN the
two modes compute identical gradients.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import RESET_FNS, SPIKE_FNS, NeuronConfig, SpikingNeuron, iter_neurons, surrogate_grad

__all__ = [
    "RATE_MODES",
    "RateConfig",
    "RateStepResult",
    "eligibility_step",
    "rate_loss_and_backward",
]

RATE_MODES: tuple[str, ...] = ("rate_M", "rate_S")
GRAD_SCALES: tuple[str, ...] = ("1/T", "1")


@dataclass(frozen=True)
class RateConfig:
    """Options of rate-based backprop.

    Attributes:
        mode: ``"rate_M"`` (multi-step spike pass) or ``"rate_S"`` (single-step spike pass).
        detach_reset: use the paper's eligibility factor for a reset whose spike is detached
            (``False``, the default, matches flexsnn's neurons, whose reset is not detached).
        grad_scale: ``"1/T"`` (official code: the loss gradient divided by the output's T) or
            ``"1"`` (the summed per-step gradient, T times larger).
    """

    mode: str = "rate_M"
    detach_reset: bool = False
    grad_scale: str = "1/T"

    def __post_init__(self) -> None:
        if self.mode not in RATE_MODES:
            raise ConfigError("backprop.rate_mode", self.mode, f"one of {RATE_MODES}", hint="rate_M is the default")
        if self.grad_scale not in GRAD_SCALES:
            raise ConfigError("backprop.grad_scale", self.grad_scale, f"one of {GRAD_SCALES}",
                              hint="1/T is the official code's scaling")


@dataclass(frozen=True)
class RateStepResult:
    """What one rate-based step returns (all detached).

    Attributes:
        loss: scalar loss of the spike pass's logits.
        logits: spike pass output ``[T_out, B, K]`` float (for accuracy bookkeeping).
    """

    loss: torch.Tensor
    logits: torch.Tensor


# --------------------------------------------------------------------------- neuron dynamics
def eligibility_step(
    x_t: torch.Tensor,
    v: torch.Tensor,
    factor: torch.Tensor | float,
    config: NeuronConfig,
    *,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One neuron step plus its eligibility bookkeeping; pure, no autograd needed.

    Args:
        x_t: input current ``[B, ...]`` at step t.
        v: membrane potential after the previous reset ``[B, ...]``.
        factor: ``k_t = d v_t / d x`` (1.0 at t = 0), scalar or ``[B, ...]``.
        config: the neuron's parameters.
        detach_reset: use the detached-reset factor (see module docstring).

    Returns:
        ``(s_t, v_next, contribution, factor_next)``: spikes (same values as
        :func:`flexsnn.models.neurons.neuron_step`), the next potential, ``surrogate'(v_t) * k_t``
        (to be averaged over t into the trace) and ``k_{t+1}``; all ``[B, ...]``.
    """
    th = float(config.threshold)
    v_int = v * config.decay + x_t
    s = SPIKE_FNS[config.spike](v_int, th)
    sg = surrogate_grad(v_int, config)
    u = RESET_FNS[config.reset](v_int, s, th)
    if config.reset == "hard":
        dudv = (1.0 - s) if detach_reset else (1.0 - s) - v_int * sg
    else:
        dudv = torch.ones_like(v_int) if detach_reset else 1.0 - th * sg
    if config.min_v_mem is not None:
        m = float(config.min_v_mem)
        dudv = dudv * (u > m).to(u.dtype)
        v_next = torch.relu(u - m) + m
    else:
        v_next = u
    contribution = sg * factor
    factor_next = 1.0 + config.decay * factor * dudv
    return s, v_next, contribution, factor_next


@dataclass
class _NeuronRecord:
    steps: int = 0
    spike_sum: Optional[torch.Tensor] = None
    elig_sum: Optional[torch.Tensor] = None
    factor: torch.Tensor | float = 1.0

    def rate(self) -> torch.Tensor:
        return self.spike_sum / self.steps

    def elig(self) -> torch.Tensor:
        return self.elig_sum / self.steps


@dataclass
class _BNRecord:
    calls: int = 0
    mean_sum: Optional[torch.Tensor] = None
    var_sum: Optional[torch.Tensor] = None  # sum of var_t (rate_M) or of 1/(var_t + eps) (rate_S)


@dataclass
class _StageRecord:
    steps: int = 0
    input_sum: Optional[torch.Tensor] = None
    scale: float = 1.0


def _channel_dims(x: torch.Tensor) -> list[int]:
    return [d for d in range(x.dim()) if d != 1]


class _Session:
    """Hooks and per-module records for one rate-based step (see :func:`rate_loss_and_backward`)."""

    def __init__(self, model: nn.Module, config: RateConfig) -> None:
        self.model = model
        self.config = config
        self.phase = "spike"
        self.neurons: dict[int, _NeuronRecord] = {}
        self.bns: dict[int, _BNRecord] = {}
        self.stages: dict[int, _StageRecord] = {}
        self.handles: list = []

    # ---------------------------------------------------------------- neuron strategy
    def neuron_strategy(self, neuron: SpikingNeuron, x: torch.Tensor, v0: torch.Tensor):
        if self.phase == "spike":
            rec = self.neurons.setdefault(id(neuron), _NeuronRecord())
            v, factor = v0, rec.factor
            spikes = []
            for t in range(x.shape[0]):
                s, v, contribution, factor = eligibility_step(
                    x[t], v, factor, neuron.config, detach_reset=self.config.detach_reset)
                spikes.append(s)
                rec.spike_sum = s if rec.spike_sum is None else rec.spike_sum + s
                rec.elig_sum = contribution if rec.elig_sum is None else rec.elig_sum + contribution
            rec.steps += x.shape[0]
            rec.factor = factor
            return torch.stack(spikes, 0), v
        rec = self.neurons.get(id(neuron))
        if rec is None or rec.steps == 0:
            raise ConfigError("rate pass", neuron._name(), "a neuron that ran in the spike pass",
                              hint="the model must call every neuron in both passes")
        x_mean = x.mean(0)
        if tuple(x_mean.shape) != tuple(rec.spike_sum.shape):
            raise ConfigError("rate pass input", tuple(x_mean.shape), f"{tuple(rec.spike_sum.shape)} (the spike "
                              "pass's shape per step)")
        path = x_mean * rec.elig()
        out = rec.rate() + (path - path.detach())
        return out.unsqueeze(0), v0

    # ---------------------------------------------------------------- BatchNorm hooks
    def bn_pre_hook(self, module: nn.modules.batchnorm._BatchNorm, args):
        if self.phase == "rate" and id(module) in self.bns:
            module._flexsnn_track = module.track_running_stats
            module.track_running_stats = False  # no second update of the running statistics
        return None

    def bn_hook(self, module: nn.modules.batchnorm._BatchNorm, args, output):
        if not module.training:
            return None
        x = args[0]
        dims = _channel_dims(x)
        if self.phase == "spike":
            rec = self.bns.setdefault(id(module), _BNRecord())
            n = x.numel() // x.shape[1]
            mean = x.sum(dims) / n  # sums: faster than mean/var over non-leading dims on CPU
            var = (x.square().sum(dims) / n - mean.square()).clamp_min(0.0)
            if self.config.mode == "rate_S":
                var = 1.0 / (var + module.eps)
            rec.mean_sum = mean if rec.mean_sum is None else rec.mean_sum + mean
            rec.var_sum = var if rec.var_sum is None else rec.var_sum + var
            rec.calls += 1
            return None
        rec = self.bns.get(id(module))
        if rec is None:
            return None
        module.track_running_stats = module.__dict__.pop("_flexsnn_track", True)
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        mean_s = (rec.mean_sum / rec.calls).view(shape)
        var_s = (rec.var_sum / rec.calls).view(shape)
        if self.config.mode == "rate_S":
            var_s = 1.0 / var_s  # harmonic mean of (var_t + eps), as the official code
        mean_r = x.mean(dims, keepdim=True)
        mean = mean_s + (mean_r - mean_r.detach())  # value: spike stats; gradient: rate stats
        var_r = ((x - mean) ** 2).mean(dims, keepdim=True)
        var = var_s + (var_r - var_r.detach())
        y = (x - mean) / torch.sqrt(var + module.eps)
        if module.weight is not None:
            y = y * module.weight.view(shape) + module.bias.view(shape)
        return y

    # ---------------------------------------------------------------- TFSNN stage hooks
    def stage_pre_hook(self, module: nn.Module, args):
        x = args[0]
        rec = self.stages[id(module)]
        if self.phase == "spike":
            total = x.detach().sum(0)
            rec.input_sum = total if rec.input_sum is None else rec.input_sum + total
            rec.steps += x.shape[0]
            return None
        value = rec.input_sum / rec.steps
        path = x.mean(0) * rec.scale
        return ((value + (path - path.detach())).unsqueeze(0),) + tuple(args[1:])

    # ---------------------------------------------------------------- install / remove
    def install(self, stage_scales: Optional[list[float]]) -> None:
        for n in iter_neurons(self.model):
            if n.strategy is not None:
                raise ConfigError("neuron.strategy", n._name(), "no other strategy installed",
                                  hint="rate-based backprop sets SpikingNeuron.strategy itself")
            n.strategy = self.neuron_strategy
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                self.handles.append(m.register_forward_pre_hook(self.bn_pre_hook))
                self.handles.append(m.register_forward_hook(self.bn_hook))
        if stage_scales is not None:
            for stage, scale in zip(self.model.stages, stage_scales):
                self.stages[id(stage)] = _StageRecord(scale=scale)
                self.handles.append(stage.register_forward_pre_hook(self.stage_pre_hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for n in iter_neurons(self.model):
            if n.strategy == self.neuron_strategy:
                n.strategy = None
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and "_flexsnn_track" in m.__dict__:
                m.track_running_stats = m.__dict__.pop("_flexsnn_track")


# --------------------------------------------------------------------------- model drivers
def _is_tfsnn(model: nn.Module) -> bool:
    return hasattr(model, "stages") and hasattr(model, "temporal_config") and hasattr(model, "ttm_mode")


def _stage_scales(model: nn.Module) -> list[float]:
    """``c_i``: mean output of the TTM entering stage i for all-ones input (1.0 for stage 0)."""
    from flexsnn.models.ttm import temporal_transform

    config = model.temporal_config
    scales = [1.0]
    for i in range(1, len(config)):
        ones = torch.ones(config[i - 1], dtype=torch.float64)
        scales.append(float(temporal_transform(ones, config[i], mode=model.ttm_mode(i)).mean()))
    return scales


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _spike_pass(model: nn.Module, net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Run the model's T steps without autograd; returns logits ``[T_out, B, K]``.

    ``model`` is what is called (possibly a DDP wrapper), ``net`` the network inside it.
    """
    from flexsnn.models.neurons import reset_neurons

    reset_neurons(net)
    if mode == "rate_M":
        return model(x)
    if not _is_tfsnn(net):
        return torch.cat([model(x[t:t + 1]) for t in range(x.shape[0])], 0)
    from flexsnn.models.ttm import temporal_transform

    config = tuple(net.temporal_config)
    try:
        if len(set(config)) == 1:  # uniform: stream the (input-TTM'd) frames through the whole net
            x0 = temporal_transform(x, config[0], mode=net.ttm_mode(0))
            net.set_uniform(1)
            return torch.cat([model(x0[t:t + 1], reset=(t == 0)) for t in range(x0.shape[0])], 0)
        h = x  # per-stage T: stage by stage, each fed one step at a time
        for i, (stage, t_i) in enumerate(zip(net.stages, config)):
            h = temporal_transform(h, t_i, mode=net.ttm_mode(i))
            h = torch.cat([stage(h[t:t + 1]) for t in range(t_i)], 0)
        return h
    finally:
        net.set_temporal_config(config)


def _rate_pass(model: nn.Module, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One autograd forward on the time-averaged input; returns ``[1, B, K]``."""
    from flexsnn.models.neurons import reset_neurons

    reset_neurons(net)
    x_rate = x.detach().mean(0, keepdim=True)
    if not _is_tfsnn(net):
        return model(x_rate)
    config = tuple(net.temporal_config)
    net.set_uniform(1)
    try:
        return model(x_rate)  # stage pre-hooks put the exact TTM'd input means in place
    finally:
        net.set_temporal_config(config)


@contextlib.contextmanager
def _session(model: nn.Module, config: RateConfig) -> Iterator[_Session]:
    session = _Session(model, config)
    session.install(_stage_scales(model) if _is_tfsnn(model) else None)
    try:
        yield session
    finally:
        session.remove()
        from flexsnn.models.neurons import reset_neurons

        reset_neurons(model)


def rate_loss_and_backward(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    mode: str = "rate_M",
    detach_reset: bool = False,
    grad_scale: str = "1/T",
    extra_loss: Callable[[], torch.Tensor | None] | None = None,
) -> RateStepResult:
    """One rate-based training step for the model's current temporal configuration.

    Computes the loss of the spike pass and accumulates rate-based gradients into the
    parameters' ``.grad`` (call ``optimizer.zero_grad()`` / ``step()`` around it, as with
    ``loss.backward()``; under MTT call it once per sampled configuration).

    Args:
        model: a :class:`~flexsnn.models.tfsnn.TFSNN` (per-stage T honoured) or any module
            mapping ``[T, B, ...]`` to ``[T_out, B, K]`` whose neurons are
            :class:`~flexsnn.models.neurons.SpikingNeuron` (reset here before each pass); may be
            wrapped in ``DistributedDataParallel`` (the rate pass's forward/backward go through
            the wrapper, so gradients are all-reduced once).
        x: input ``[T_in, B, C, H, W]`` float (time first).
        target: labels int64 ``[B]``.
        loss_fn: e.g. ``build_loss("tmc")``: ``(logits [T, B, K], target) -> scalar``.
        mode: ``"rate_M"`` or ``"rate_S"``.
        detach_reset: eligibility factor for a detached reset (see module docstring).
        grad_scale: ``"1/T"`` (official code, default) or ``"1"`` (see module docstring).
        extra_loss: called right after the rate pass; a scalar it returns (built on the rate
            pass's tensors, e.g. :meth:`flexsnn.training.synops.BudgetedLoss.rate_penalty`) is
            backpropagated with the drive, unscaled. Its value must already be in ``loss_fn``'s.

    Returns:
        :class:`RateStepResult` with the detached loss and spike-pass logits.
    """
    config = RateConfig(mode=mode, detach_reset=detach_reset, grad_scale=grad_scale)
    net = _unwrap(model)
    if not net.training:
        raise ConfigError("model.training", False, "True (call model.train())",
                          hint="rate-based backprop is a training procedure")
    with _session(net, config) as session:
        with torch.no_grad():
            logits = _spike_pass(model, net, x, config.mode)
        leaf = logits.detach().float().requires_grad_(True)  # loss in float32 (autocast-safe)
        with torch.enable_grad():
            loss = loss_fn(leaf, target)
            (grad_logits,) = torch.autograd.grad(loss, leaf)
        session.phase = "rate"
        with torch.enable_grad():
            out = _rate_pass(model, net, x)
            if out.shape[0] != 1 or tuple(out.shape[1:]) != tuple(logits.shape[1:]):
                raise ConfigError("rate pass output", tuple(out.shape), f"[1, {', '.join(map(str, logits.shape[1:]))}]")
            extra = extra_loss() if extra_loss is not None else None
            roots, grads = [], []
            if out.requires_grad:
                drive = grad_logits.sum(0, keepdim=True)
                if config.grad_scale == "1/T":
                    drive = drive / logits.shape[0]
                roots.append(out), grads.append(drive.to(out.dtype))
            if extra is not None and extra.requires_grad:
                roots.append(extra), grads.append(torch.ones_like(extra))
            if roots:
                torch.autograd.backward(roots, grads)
    return RateStepResult(loss=loss.detach(), logits=logits.detach())
