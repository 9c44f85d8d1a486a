"""Chip-faithful forward for training: fake quantization as the converter discretizes, and the
chip's single-spike neuron.

**Fake quantization** (:func:`chip_forward` with ``quantize=True``). The converter
(:mod:`flexsnn.converters.discretize`, sinabs' rule) gives each chip layer (a conv or linear
layer and the neuron after it) one scale::

    s = min(scale(w, 8 bits), scale(b, 8 bits), scale((min_v_mem, threshold), 16 bits))
    scale(v, n) = (2^(n-1) - 1) / max(v)   if |min(v)| <= max(v) * 2^(n-1) / (2^(n-1) - 1)
                  2^(n-1) / |min(v)|       otherwise

and the chip computes with ``round(w * s)`` (int8), ``round(threshold * s)`` and
``round(min_v_mem * s)``. Here every forward does the same, in those integer units: the layer
runs with ``round(w * s)`` (straight-through gradient ``d round(w s)/dw = s``; ``s`` is a
constant of the step, recomputed from the current weights), and its neuron with the rounded
threshold and floor. Spike counts are therefore exactly what the time-binned backend computes
on the exported image (tests/test_qat.py), and gradients keep their float scale (the
surrogate's width is relative to the threshold, so ``d spikes / d w`` is unchanged up to
``s / round(s)``). Biases must be absent (the bias-free phase); BatchNorm is refused.

**Single-spike neurons** (``spike="single"``): at most one spike per neuron per update,
``s = 1[v >= threshold]`` (the chip's comparison, sinabs' ``SingleSpike``), subtract reset;
the surrogate gradient is the neuron's own. The checkpoint keeps the multi-spike neuron the
converter requires; only training sees the single spike. Evaluate such models with
``TimeBinnedBackend(spike="single")`` or the asynchronous simulator (single by default).

Both are applied through the neuron's ``strategy`` hook and an instance ``forward`` on the
weight layers, inside the :func:`chip_forward` context; nothing is stored in the model.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import (RESET_FNS, NeuronConfig, SpikingNeuron, surrogate_grad)

SPIKES = ("multi", "single")
#: Bits of the chip's weights and neuron states (Speck2e; converters.speck2e.SPECK2E).
WEIGHT_BITS, STATE_BITS = 8, 16


def discretization_scale(values: torch.Tensor, bits: int) -> float:
    """sinabs' scale of ``values`` at ``bits`` signed bits (``inf`` for all zeros); the same
    arithmetic as :func:`flexsnn.converters.discretize.discretization_scale`."""
    lo_d = -(2 ** (bits - 1))
    hi_d = 2 ** (bits - 1) - 1
    lo, hi = torch.min(values), torch.max(values)
    if abs(lo) <= abs(hi) * abs(lo_d / hi_d):
        return float(abs(hi_d / hi))
    return float(abs(lo_d / lo))


def layer_scale(weight: torch.Tensor, threshold: float, min_v_mem: Optional[float]) -> float:
    """The converter's scale of one chip layer (no bias), a float32 value as sinabs uses."""
    if min_v_mem is None:
        raise ConfigError("neuron.min_v_mem", None, "a number for chip training",
                          "speck-iaf neurons have min_v_mem=-1; None cannot be exported")
    w = weight.detach().to(torch.float32)
    s = min(discretization_scale(w, WEIGHT_BITS),
            discretization_scale(torch.tensor((float(min_v_mem), float(threshold))), STATE_BITS))
    return float(torch.tensor(s, dtype=torch.float32))


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity gradient (straight-through)."""
    return _RoundSTE.apply(x)


class _SingleSpikeGE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, config: NeuronConfig) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.config = config
        return (v >= float(config.threshold)).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad * surrogate_grad(v, ctx.config), None


def _chip_neuron_loop(x: torch.Tensor, v: torch.Tensor, config: NeuronConfig,
                      single: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~flexsnn.models.neurons.neuron_multi_step` with the chip's single spike when asked."""
    from flexsnn.models.neurons import spike as multi_spike

    out = []
    for t in range(x.shape[0]):
        v_int = v * config.decay + x[t]
        s_t = _SingleSpikeGE.apply(v_int, config) if single else multi_spike(v_int, config)
        v = RESET_FNS[config.reset](v_int, s_t, float(config.threshold))
        if config.min_v_mem is not None:
            m = float(config.min_v_mem)
            v = torch.relu(v - m) + m
        out.append(s_t)
    return torch.stack(out, 0), v


def chip_layers(model: nn.Module) -> list[tuple[nn.Module, SpikingNeuron]]:
    """``(weight layer, its neuron)`` pairs of a Speck net, input to output.

    Raises:
        ConfigError: BatchNorm present, a bias that is not zero, or a weight layer without a
            neuron after it.
    """
    layers = model.flat_layers() if hasattr(model, "flat_layers") else list(model.modules())
    pairs: list[tuple[nn.Module, SpikingNeuron]] = []
    pending: Optional[nn.Module] = None
    for layer in layers:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            raise ConfigError("qat", type(layer).__name__, "a model without BatchNorm",
                              "quantization-aware training runs in the bias-free phase (--phase bias_removal)")
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if layer.bias is not None and bool(torch.any(layer.bias != 0)):
                raise ConfigError("qat", "non-zero bias", "bias-free weight layers",
                                  "remove biases first (--phase bias_removal)")
            pending = layer
        elif isinstance(layer, SpikingNeuron) and pending is not None:
            pairs.append((pending, layer))
            pending = None
    if pending is not None:
        raise ConfigError("qat", type(pending).__name__, "a spiking neuron after every weight layer")
    return pairs


def _quant_forward(layer: nn.Module, neuron: SpikingNeuron):
    def forward(x: torch.Tensor) -> torch.Tensor:
        s = layer_scale(layer.weight, neuron.config.threshold, neuron.config.min_v_mem)
        w = round_ste(layer.weight * torch.tensor(s, dtype=layer.weight.dtype, device=layer.weight.device))
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.linear(x, w)
    return forward


def _neuron_strategy(layer: Optional[nn.Module], single: bool):
    def strategy(neuron: SpikingNeuron, x: torch.Tensor, v0: torch.Tensor):
        cfg = neuron.config
        if layer is not None:
            s = layer_scale(layer.weight, cfg.threshold, cfg.min_v_mem)
            q = torch.round(torch.tensor((float(cfg.min_v_mem), float(cfg.threshold)))
                            * torch.tensor(s, dtype=torch.float32))
            cfg = replace(cfg, threshold=float(q[1]), min_v_mem=float(q[0]))
        return _chip_neuron_loop(x, v0, cfg, single)
    return strategy


@contextlib.contextmanager
def chip_forward(model: nn.Module, *, quantize: bool = True, spike: str = "multi") -> Iterator[nn.Module]:
    """Run ``model`` as the chip will, inside the context (see module docstring).

    Args:
        model: a bias-free Speck net (TFSNN or ``nn.Sequential``) with ``speck-iaf`` neurons.
        quantize: fake-quantize weights, thresholds and floors per chip layer.
        spike: ``"multi"`` (the neuron's own) or ``"single"`` (chip: one spike per update).

    Raises:
        ConfigError: unknown ``spike``, BatchNorm or biases (with ``quantize``), a neuron
            already driven by another strategy (e.g. rate-based backprop).
    """
    if spike not in SPIKES:
        raise ConfigError("train_spike", spike, f"one of {', '.join(SPIKES)}")
    if not quantize and spike == "multi":
        yield model
        return
    pairs = chip_layers(model) if quantize else [(None, n) for n in model.modules()
                                                   if isinstance(n, SpikingNeuron)]
    for _layer, neuron in pairs:
        if neuron.strategy is not None:
            raise ConfigError("qat", "neuron strategy in use", "plain BPTT neurons",
                              "chip-faithful training needs --backprop bptt")
    try:
        for layer, neuron in pairs:
            if layer is not None:
                layer.forward = _quant_forward(layer, neuron)
            neuron.strategy = _neuron_strategy(layer, spike == "single")
        yield model
    finally:
        for layer, neuron in pairs:
            if layer is not None and "forward" in layer.__dict__:
                del layer.forward
            neuron.strategy = None
