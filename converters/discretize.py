"""Discretization with sinabs' rules: one scale per layer, then round.

For each chip layer, the scale is the smallest of (sinabs ``determine_discretization_scale``):

- weights at 8 bits, biases at 8 bits,
- ``(min_v_mem, threshold)`` at 16 bits,

where a tensor's scale is ``127 / max`` if ``|min| <= max * 128/127`` else ``128 / |min|``.
Weights, biases, threshold and ``min_v_mem`` are multiplied by it and rounded (float32, as in
sinabs, so results match sinabs bit for bit). Pure functions on tensors; nothing is modified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.errors import ChipConstraintError, Violation

log = logging.getLogger(__name__)

#: warn when more than this fraction of a layer's non-zero weights become zero
LOSS_WARN_FRACTION = 0.5


def discretization_scale(values: torch.Tensor, bits: int) -> float:
    """sinabs' scale for ``values`` at ``bits`` signed bits (``inf`` for an all-zero tensor)."""
    lo_d = -(2 ** (bits - 1))
    hi_d = 2 ** (bits - 1) - 1
    lo = torch.min(values)
    hi = torch.max(values)
    if abs(lo) <= abs(hi) * abs(lo_d / hi_d):
        scale = abs(hi_d / hi)
    else:
        scale = abs(lo_d / lo)
    return float(scale)


@dataclass(frozen=True, eq=False)
class DiscreteLayer:
    """One layer after discretization.

    Attributes:
        weights: int8 ``[c_out, c_in, kh, kw]``; biases: int16 ``[c_out]`` (within 8 bits).
        threshold_high, threshold_low: integer state units (16 bits).
        scale: the factor every float value was multiplied by.
        n_weights, n_clipped (left the 8-bit range and were clipped), n_zeroed (non-zero floats
        that rounded to 0), n_nonzero (non-zero float weights).
        threshold_exact: ``threshold * scale`` before rounding (state units); with
        ``threshold_high`` it gives the threshold rounding error.
        n_reach_threshold: integer weights ``>= threshold_high`` (one event alone fires a
        neuron; see :func:`reach_threshold_warning`).
    """

    weights: np.ndarray
    biases: np.ndarray
    threshold_high: int
    threshold_low: int
    scale: float
    n_weights: int
    n_nonzero: int
    n_clipped: int
    n_zeroed: int
    threshold_exact: float = float("nan")
    n_reach_threshold: int = 0

    @property
    def zeroed_fraction(self) -> float:
        return self.n_zeroed / self.n_nonzero if self.n_nonzero else 0.0

    @property
    def threshold_error(self) -> float:
        """Relative threshold rounding error ``(threshold_high - exact) / exact`` (0.01 = 1 %)."""
        return (self.threshold_high - self.threshold_exact) / self.threshold_exact


def reach_threshold_warning(layer: DiscreteLayer, name: str) -> str | None:
    """A warning when integer weights reach ``threshold_high``, else None.

    One input event then carries a neuron from rest past its threshold, and (with a weight above
    it) past twice the threshold: the chip fires at most once per neuron update (sinabs' Speck
    docs), whereas ``MultiSpike`` training emitted several spikes, so the chip loses spikes.
    """
    if layer.n_reach_threshold == 0:
        return None
    return (f"{name}: {layer.n_reach_threshold} integer weights >= threshold_high {layer.threshold_high} "
            f"(max {int(layer.weights.max())}): one event can push a neuron past its threshold, and the chip "
            "fires at most once per update where MultiSpike training fired several; lower the weights or "
            "raise the threshold (e.g. train with a weight clip below the threshold)")


def discretize_layer(weight: torch.Tensor, bias: torch.Tensor | None, threshold: float,
                     min_v_mem: float | None, *, name: str = "layer", limits: ChipLimits = SPECK2E) -> DiscreteLayer:
    """Discretize one Conv -> IAF pair (see module docstring).

    Args:
        weight: float ``[c_out, c_in, kh, kw]``; bias: float ``[c_out]`` or None (zeros).
        threshold: spike threshold; min_v_mem: lower bound of v_mem (required).
        name: for messages and the warning.

    Raises:
        ChipConstraintError: ``min_v_mem`` is None (sinabs would use -2^15 and zero small weights).
    """
    if min_v_mem is None:
        raise ChipConstraintError([Violation(name, "min_v_mem", None, "a number",
                                             "set min_v_mem (e.g. -threshold); None makes the scale <= 1 "
                                             "and silently zeroes small weights")], limits.name)
    w = weight.detach().to(torch.float32)
    b = torch.zeros(w.shape[0]) if bias is None else bias.detach().to(torch.float32)
    thresholds = torch.tensor((float(min_v_mem), float(threshold)))
    scale_t = min(
        discretization_scale(w, limits.weight_bits),
        discretization_scale(b, limits.bias_bits),
        discretization_scale(thresholds, limits.state_bits),
    )
    # sinabs multiplies float32 tensors by the (Python float of a float32) scale
    scale = torch.tensor(scale_t, dtype=torch.float32)
    wq = torch.round(w * scale)
    bq = torch.round(b * scale)
    tq = torch.round(thresholds * scale)
    wlo, whi = limits.weight_range
    blo, bhi = limits.bias_range
    n_clipped = int(((wq < wlo) | (wq > whi)).sum() + ((bq < blo) | (bq > bhi)).sum())
    wq = wq.clamp(wlo, whi)
    bq = bq.clamp(blo, bhi)
    slo, shi = limits.state_range
    low, high = (int(v) for v in tq.clamp(slo, shi).tolist())
    if high <= 0 or low >= high:
        raise ChipConstraintError([Violation(
            name, "discrete threshold", (low, high), "threshold_low < threshold_high, threshold_high >= 1",
            f"threshold {threshold:g} (min_v_mem {min_v_mem:g}) rounds to {high} at scale {float(scale):.4g}, "
            "set by the largest weight: the weights are far above the threshold; scale weights and "
            "threshold together (e.g. threshold 1 and weights < 1)")], limits.name)
    nonzero = w != 0
    n_zeroed = int((nonzero & (wq == 0)).sum())
    layer = DiscreteLayer(
        weights=wq.numpy().astype(np.int8), biases=bq.numpy().astype(np.int16),
        threshold_high=high, threshold_low=low, scale=float(scale),
        n_weights=int(w.numel()), n_nonzero=int(nonzero.sum()), n_clipped=n_clipped, n_zeroed=n_zeroed,
        threshold_exact=float(thresholds[1].double() * scale.double()),
        n_reach_threshold=int((wq >= high).sum()),
    )
    if layer.zeroed_fraction > LOSS_WARN_FRACTION:
        log.warning("%s: discretization (scale %.4g) turned %d of %d non-zero weights into 0 (%.0f%%); "
                    "the layer may stop working: lower the threshold/min_v_mem range or raise the weights",
                    name, layer.scale, layer.n_zeroed, layer.n_nonzero, 100 * layer.zeroed_fraction)
    return layer


def discretized_chip_model(model: torch.nn.Sequential, layers: list, discrete: list[DiscreteLayer]) -> torch.nn.Sequential:
    """A copy of chip-ready ``model`` with the integer weights/thresholds as floats (what the chip
    computes, runnable in sinabs). ``layers``: its :class:`~flexsnn.converters.validate.ChipLayer` list."""
    from flexsnn.converters.chip_model import copy_model

    new = copy_model(model)
    with torch.no_grad():
        for cl, d in zip(layers, discrete):
            conv = new[cl.index]
            conv.weight.copy_(torch.from_numpy(d.weights.astype(np.float32)))
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(d.biases.astype(np.float32)))
            nrn = new[cl.neuron_index]
            nrn.spike_threshold = torch.nn.Parameter(torch.tensor(float(d.threshold_high)), requires_grad=False)
            nrn.min_v_mem = torch.nn.Parameter(torch.tensor(float(d.threshold_low)), requires_grad=False)
    return new
