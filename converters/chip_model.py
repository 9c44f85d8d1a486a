"""Chip-ready sinabs model: a trained flexsnn model -> plain ``nn.Sequential`` the chip can run.

The result holds only ``nn.Conv2d`` (weights ``[c_out, c_in, k, k]``), ``sinabs.layers.IAFSqueeze``
(scalar threshold, ``min_v_mem`` set, ``MultiSpike``, ``MembraneSubtract``) and
``sinabs.layers.SumPool2d``, in the order Conv -> IAF -> [SumPool] per chip core. Conversion rules
(each step returns new modules; the source model is never modified):

- ``BatchNorm`` after a Conv/Linear is folded into its weights (``w * gamma / sqrt(var + eps)``);
  what remains is a bias ``beta - mean * gamma / sqrt(var + eps)``.
- Biases are refused unless ``allow_leak=True``: the chip adds a bias as a *leak*, once per tick
  of its slow clock, independent of the input events (see :data:`LEAK_WARNING`).
- ``AvgPool2d(k)`` becomes ``SumPool2d(k)`` and the next Conv/Linear's weights are divided by k².
- ``Linear`` becomes a ``Conv2d`` whose kernel is the whole input map (``Flatten`` is dropped;
  C, H, W flatten order is kept), so the output is ``[B*T, K, 1, 1]``.
- ``SpikingNeuron`` (``speck-iaf``: decay 1, multi spike, subtract reset) and sinabs ``IAF``/``IAFSqueeze``
  (``MembraneSubtract`` or ``MembraneReset``, ``MultiSpike`` or ``SingleSpike``) become
  ``IAFSqueeze``; ``min_v_mem=None`` is carried over so that :func:`validate` refuses it.
  Anything the chip cannot express is refused by name, never dropped: a leak (``LIF``,
  ``ExpLeak``), ``tau_syn``, trained decays, per-neuron thresholds, ``MaxSpike``, a reset value
  other than 0, a subtract value other than the threshold, recurrent layers.

sinabs layers take time folded into the batch, ``[B*T, ...]`` (batch-major); flexsnn keeps
time first, ``[T, B, ...]``. :func:`to_sinabs_layout` and :func:`from_sinabs_layout` are the one
place where that conversion happens.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from flexsnn.errors import ChipConstraintError, ConfigError, Violation

log = logging.getLogger(__name__)

LEAK_WARNING = (
    "biases become a leak on Speck2e: the chip adds each bias to its neurons on every tick of a "
    "slow clock, whether or not input events arrive, so outputs then depend on the recording's "
    "duration rather than on the events alone"
)

ModelLike = Union[nn.Module, str, Path]


# --------------------------------------------------------------------------- layout boundary
def to_sinabs_layout(x: torch.Tensor) -> torch.Tensor:
    """flexsnn ``[T, B, ...]`` -> sinabs ``[B*T, ...]`` (sample-major: rows ``b*T + t``)."""
    if x.dim() < 2:
        raise ConfigError("input", tuple(x.shape), "a tensor [T, B, ...] (time first)")
    t, b = x.shape[0], x.shape[1]
    return x.transpose(0, 1).reshape(b * t, *x.shape[2:])


def from_sinabs_layout(y: torch.Tensor, T: int) -> torch.Tensor:
    """sinabs ``[B*T, ...]`` -> flexsnn ``[T, B, ...]`` (inverse of :func:`to_sinabs_layout`)."""
    if y.shape[0] % T:
        raise ConfigError("output", tuple(y.shape), f"a first dimension divisible by T={T}")
    b = y.shape[0] // T
    return y.reshape(b, T, *y.shape[1:]).transpose(0, 1)


def run_chip_model(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a chip-ready model on flexsnn input ``x [T, B, C, H, W]`` from reset state.

    Returns output spikes ``[T, B, K]`` (float spike counts; ``[T, B, K, 1, 1]`` flattened).
    The model's ``IAFSqueeze`` layers must have been built for batch size B (see
    :func:`set_batch_size`).
    """
    reset_states(model)
    set_batch_size(model, x.shape[1])
    y = model(to_sinabs_layout(x))
    return from_sinabs_layout(y, x.shape[0]).flatten(2)


def reset_states(model: nn.Module) -> None:
    """Reset every sinabs stateful layer of ``model``."""
    for m in model.modules():
        if hasattr(m, "reset_states") and m is not model:
            m.reset_states()


def set_batch_size(model: nn.Module, batch_size: int) -> None:
    """Make every ``IAFSqueeze`` of ``model`` unfold ``[B*T, ...]`` with ``batch_size`` B."""
    import sinabs.layers as sl

    for m in model.modules():
        if isinstance(m, sl.IAFSqueeze):
            m.batch_size, m.num_timesteps = int(batch_size), -1


# --------------------------------------------------------------------------- conversion
@dataclass(frozen=True)
class ChipModelInfo:
    """Facts gathered while converting: ``source_names[i]`` names chip-ready layer i's origin;
    ``folded_bn`` counts folded BatchNorms; ``leak_layers`` lists chip-ready indices of convs
    with non-zero biases (only with ``allow_leak``)."""

    source_names: tuple[str, ...]
    folded_bn: int
    leak_layers: tuple[int, ...]
    num_classes: int


def load_source_model(model_or_checkpoint: ModelLike) -> tuple[nn.Module, str]:
    """A model and a description of where it came from (checkpoint path or class name)."""
    if isinstance(model_or_checkpoint, (str, Path)):
        from flexsnn.models.checkpoint import load_model

        model, _meta = load_model(model_or_checkpoint)
        return model, str(model_or_checkpoint)
    if not isinstance(model_or_checkpoint, nn.Module):
        raise ConfigError("model", type(model_or_checkpoint).__name__, "an nn.Module or a checkpoint path")
    return model_or_checkpoint, type(model_or_checkpoint).__name__


def flat_source_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` pairs of a TFSNN (all stages), an ``nn.Sequential`` or a sinabs
    ``Network`` (``sinabs.from_torch.from_model``: its ``spiking_model``), input to output."""
    if not isinstance(model, nn.Sequential) and isinstance(getattr(model, "spiking_model", None), nn.Sequential):
        return flat_source_layers(model.spiking_model)
    if hasattr(model, "stages") and hasattr(model, "flat_layers"):
        out = []
        for stage in model.stages:
            for i, layer in enumerate(stage.layers):
                out.append((f"{stage.name}.{i}", layer))
        return out
    if isinstance(model, nn.Sequential):
        out = []
        for name, layer in model.named_children():
            if isinstance(layer, nn.Sequential):
                out += [(f"{name}.{n}", m) for n, m in flat_source_layers(layer)]
            else:
                out.append((name, layer))
        return out
    raise ConfigError("model", type(model).__name__, "a TFSNN, an nn.Sequential of layers or a sinabs Network",
                      "pass a zoo model, a checkpoint path, or an nn.Sequential")


def _bn_fold(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(y) == y * scale + shift`` per channel (eval statistics).

    Uses torch's own formula, ``scale = gamma / sqrt(running_var + eps)``, so the folded layer
    computes exactly what ``BatchNorm`` computed in eval mode. sinabs' ``merge_bn`` omits
    ``eps`` (``gamma / sqrt(running_var)``); for channels with a small running variance the two
    differ slightly, which after discretization shows as ±1 on a few int8 weights. flexsnn keeps
    torch's formula on purpose (it matches the trained model, not sinabs' approximation).
    """
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale.detach(), (beta - bn.running_mean * scale).detach()


def _sinabs_neuron_violations(layer: nn.Module, where: str) -> list[Violation]:
    """Every neuron parameter of a sinabs ``LIF``-family layer the chip cannot express."""
    import sinabs.activation as sa
    import sinabs.layers as sl

    bad: list[Violation] = []
    name = type(layer).__name__
    if isinstance(layer, getattr(sl, "LIFRecurrent", ())):
        bad.append(Violation(where, "recurrent connection", name, "a feed-forward IAF layer",
                             "use sl.IAF / sl.IAFSqueeze (the chip's recurrence is core-to-core feedback, "
                             "not a per-layer recurrent weight)"))
    if not isinstance(layer, sl.IAF):
        tau = torch.as_tensor(getattr(layer, "tau_mem", float("nan"))).detach()
        no_leak = bool(torch.all(torch.isinf(tau))) and not getattr(layer, "norm_input", True)
        if not no_leak:
            value = f"tau_mem={float(tau.flatten()[0]):g}" if tau.numel() else "tau_mem"
            bad.append(Violation(where, "neuron leak", f"{name}({value})", "no leak (integrate-and-fire)",
                                 "retrain with sl.IAF / sl.IAFSqueeze, or set the leak to zero "
                                 "(tau_mem=inf, norm_input=False): the chip's neurons do not leak"))
    if getattr(layer, "tau_syn", None) is not None:
        bad.append(Violation(where, "tau_syn", f"{float(torch.as_tensor(layer.tau_syn).flatten()[0]):g}",
                             "None (no synaptic current)",
                             "remove tau_syn (IAF(tau_syn=None)) and retrain: the chip has no synaptic filter"))
    if getattr(layer, "train_alphas", False):
        bad.append(Violation(where, "train_alphas", True, "False", "use sl.IAF without trained decays"))
    thr = torch.as_tensor(getattr(layer, "spike_threshold", float("nan"))).detach()
    if thr.numel() != 1:
        bad.append(Violation(where, "spike_threshold", f"tensor of {thr.numel()} values", "one scalar per layer",
                             "use one threshold per layer"))
    spike_fn = getattr(layer, "spike_fn", None)
    if spike_fn not in (sa.MultiSpike, sa.SingleSpike):
        bad.append(Violation(where, "spike_fn", getattr(spike_fn, "__name__", repr(spike_fn)),
                             "MultiSpike or SingleSpike",
                             "use MultiSpike (the chip emits one spike per neuron update; a MaxSpike cap "
                             "has no chip equivalent)"))
    reset = getattr(layer, "reset_fn", None)
    if isinstance(reset, sa.MembraneSubtract):
        sub = reset.subtract_value
        if sub is not None and thr.numel() == 1 and float(sub) != float(thr):
            bad.append(Violation(where, "reset_fn.subtract_value", float(sub), f"the threshold {float(thr):g}",
                                 "use MembraneSubtract() (the chip subtracts threshold_high)"))
    elif isinstance(reset, sa.MembraneReset):
        if float(reset.reset_value) != 0.0:
            bad.append(Violation(where, "reset_fn.reset_value", float(reset.reset_value), "0",
                                 "use MembraneReset() (the chip resets to zero)"))
    else:
        bad.append(Violation(where, "reset_fn", type(reset).__name__, "MembraneSubtract or MembraneReset",
                             "use MembraneSubtract() or MembraneReset()"))
    return bad


def _neuron_to_iaf(layer: nn.Module, where: str) -> nn.Module:
    """A chip-ready ``IAFSqueeze`` for a sinabs or flexsnn neuron layer, or a ChipConstraintError
    naming every parameter the chip cannot express (leak, ``tau_syn``, per-neuron thresholds,
    a spike cap, a non-zero reset value, recurrence).

    Kept from the source: threshold, ``min_v_mem``, the reset (``MembraneSubtract`` -> chip
    reset_mode ``subtract``; ``MembraneReset`` -> ``zero``) and the
    spike function (``MultiSpike``, or ``SingleSpike``: the chip itself emits one spike per
    neuron update, see the weights-reach-threshold warning of the export).
    """
    import sinabs.activation as sa
    import sinabs.layers as sl

    from flexsnn.models.neurons import SpikingNeuron

    if isinstance(layer, sl.LIF):
        bad = _sinabs_neuron_violations(layer, where)
        if bad:
            raise ChipConstraintError(bad)
        thr = float(torch.as_tensor(layer.spike_threshold))
        reset = sa.MembraneReset() if isinstance(layer.reset_fn, sa.MembraneReset) else sa.MembraneSubtract()
        return sl.IAFSqueeze(spike_threshold=thr, min_v_mem=None if layer.min_v_mem is None
                             else float(layer.min_v_mem), spike_fn=layer.spike_fn, reset_fn=reset, batch_size=1)
    if not isinstance(layer, SpikingNeuron):
        raise ChipConstraintError([Violation(where, "neuron type", type(layer).__name__,
                                             "sinabs IAF/IAFSqueeze or a flexsnn SpikingNeuron",
                                             "replace it with an IAF neuron")])
    c = layer.config
    bad = []
    if c.decay != 1.0:
        bad.append(Violation(where, "neuron decay", c.decay, "1.0 (integrate-and-fire)",
                             "train with the speck-iaf neuron profile"))
    if c.reset != "subtract" or c.spike != "multi":
        bad.append(Violation(where, "neuron spike/reset", f"{c.spike}/{c.reset}", "multi/subtract",
                             "train with the speck-iaf neuron profile (a zero reset needs a sinabs IAF with "
                             "MembraneReset: flexsnn's single spike fires at v > threshold, the chip at "
                             "v >= threshold)"))
    if bad:
        raise ChipConstraintError(bad)
    return sl.IAFSqueeze(spike_threshold=float(c.threshold), min_v_mem=c.min_v_mem,
                         spike_fn=sa.MultiSpike, reset_fn=sa.MembraneSubtract(), batch_size=1)


def _is_neuron(layer: nn.Module) -> bool:
    import sinabs.layers as sl

    from flexsnn.models.neurons import SpikingNeuron

    return isinstance(layer, (SpikingNeuron, sl.LIF))


def chip_ready_model(
    model_or_checkpoint: ModelLike,
    *,
    input_shape: Optional[Sequence[int]] = None,
    allow_leak: bool = False,
) -> tuple[nn.Sequential, ChipModelInfo]:
    """Convert a trained model to a chip-ready sinabs ``nn.Sequential`` (see module docstring).

    Args:
        model_or_checkpoint: a TFSNN, an ``nn.Sequential`` of torch/sinabs/flexsnn layers, or a
            checkpoint path (``.safetensors``).
        input_shape: ``(C, H, W)`` of one frame; default the model's ``input_shape``.
        allow_leak: keep non-zero biases (they act as a leak on the chip; a warning is logged).

    Returns:
        ``(model, info)``; the model maps ``[B*T, C, H, W]`` to ``[B*T, K, 1, 1]`` (or to the
        last conv's map), its ``IAFSqueeze`` layers are set to batch size 1.

    Raises:
        ChipConstraintError: biases without ``allow_leak``, non-IAF neurons, unsupported layers
            (every problem listed at once).
    """
    model, _src = load_source_model(model_or_checkpoint)
    import sinabs.layers as sl

    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ConfigError("input_shape", None, "(C, H, W) of one input frame")
    shape = tuple(int(v) for v in input_shape)
    layers = flat_source_layers(model)
    out: list[nn.Module] = []
    names: list[str] = []
    violations: list[Violation] = []
    pending_scale = 1.0  # from AvgPool, applied to the next weight layer
    folded = 0
    i = 0
    with torch.no_grad():
        while i < len(layers):
            name, layer = layers[i]
            where = f"source layer {i} {name} ({type(layer).__name__})"
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                if isinstance(layer, nn.Conv2d):
                    if layer.groups != 1 or tuple(layer.dilation) != (1, 1):
                        violations.append(Violation(where, "groups/dilation", (layer.groups, layer.dilation),
                                                    "1 / (1, 1)", "use plain convolutions"))
                    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     stride=layer.stride, padding=layer.padding, bias=True)
                    weight = layer.weight.detach().clone()
                    if isinstance(layer.padding, str):
                        violations.append(Violation(where, "padding", layer.padding, "integers",
                                                    "give explicit padding"))
                else:
                    c, h, w = shape if len(shape) == 3 else (shape[0], 1, 1)
                    if c * h * w != layer.in_features:
                        raise ConfigError(f"{name}.in_features", layer.in_features,
                                          f"{c}*{h}*{w}={c * h * w} (the map entering it)")
                    conv = nn.Conv2d(c, layer.out_features, (h, w), bias=True)
                    weight = layer.weight.detach().reshape(layer.out_features, c, h, w).clone()
                bias = (layer.bias.detach().clone() if layer.bias is not None
                        else torch.zeros(weight.shape[0]))
                weight = weight * pending_scale
                pending_scale = 1.0
                if i + 1 < len(layers) and isinstance(layers[i + 1][1], (nn.BatchNorm1d, nn.BatchNorm2d)):
                    scale, shift = _bn_fold(layers[i + 1][1])
                    weight = weight * scale.reshape(-1, 1, 1, 1)
                    bias = bias * scale + shift
                    folded += 1
                    i += 1
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
                if torch.any(bias != 0):
                    if allow_leak:
                        log.warning("layer %d (%s) has non-zero biases: %s", len(out), name, LEAK_WARNING)
                    else:
                        violations.append(Violation(
                            f"layer {len(out)} (Conv2d, from {name})", "biases",
                            f"{int((bias != 0).sum())} non-zero (max |b| {float(bias.abs().max()):.3g})",
                            "all zero unless allow_leak",
                            "run BN calibration's bias removal (zero BN running mean and beta) and "
                            "fine-tune, or pass --allow-leak to accept them as a leak (" + LEAK_WARNING + ")"))
                out.append(conv)
                names.append(name)
                shape = tuple(conv(torch.zeros(1, *shape[-3:]) if len(shape) == 3 else
                                   torch.zeros(1, shape[0], 1, 1)).shape[1:])
            elif _is_neuron(layer):
                try:
                    out.append(_neuron_to_iaf(layer, where))
                    names.append(name)
                except ChipConstraintError as err:
                    violations.extend(err.violations)
            elif isinstance(layer, sl.SumPool2d) or isinstance(layer, nn.AvgPool2d):
                k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
                stride = layer.stride if layer.stride is not None else k
                stride = stride if isinstance(stride, int) else stride[0]
                pool = sl.SumPool2d(kernel_size=k, stride=stride)
                if isinstance(layer, nn.AvgPool2d):
                    pending_scale = pending_scale / float(k * k)
                out.append(pool)
                names.append(name)
                shape = (shape[0], shape[1] // stride, shape[2] // stride) if k == stride else \
                    tuple(pool(torch.zeros(1, *shape)).shape[1:])
            elif isinstance(layer, nn.Flatten):
                pass  # Linear -> Conv keeps the C, H, W order; the map stays [C, H, W]
            elif isinstance(layer, (nn.modules.dropout._DropoutNd, nn.Identity)):  # any Dropout: dropped
                pass
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                violations.append(Violation(where, "layer type", "BatchNorm not after Conv/Linear",
                                            "BatchNorm directly after a Conv or Linear",
                                            "move the BatchNorm after a weight layer"))
            else:
                violations.append(Violation(where, "layer type", type(layer).__name__,
                                            "Conv2d, Linear, BatchNorm, IAF neuron, SumPool2d/AvgPool2d, Flatten",
                                            "replace it with a supported layer"))
            i += 1
    if violations:
        raise ChipConstraintError(violations)
    leak = tuple(j for j, m in enumerate(out) if isinstance(m, nn.Conv2d) and torch.any(m.bias != 0))
    num_classes = int(getattr(model, "num_classes", shape[0]))
    return nn.Sequential(*out), ChipModelInfo(tuple(names), folded, leak, num_classes)


def copy_model(model: nn.Sequential) -> nn.Sequential:
    """A deep copy with reset states (converter steps never modify their input)."""
    new = copy.deepcopy(model)
    reset_states(new)
    return new
