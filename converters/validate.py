"""Design-rule checks of a chip-ready model against the Speck2e limits (rockpool-mapper style).

:func:`parse_chip_layers` groups a chip-ready ``nn.Sequential`` into *chip layers*
(Conv2d -> IAF -> optional SumPool2d, one per core) and reports structural problems; each rule in
:data:`RULES` is a small pure function ``rule(layers, input_shape, limits) -> list[Violation]``;
:func:`validate` runs them all and raises one :class:`ChipConstraintError` listing every
violation. Every violation names the layer (index in the chip-ready model and type), the limit,
the value and a concrete fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from flexsnn.converters.speck2e import (
    SPECK2E,
    ChipLimits,
    bias_memory_entries,
    kernel_memory_entries,
    neuron_memory_entries,
)
from flexsnn.errors import ChipConstraintError, Violation


@dataclass(frozen=True, eq=False)
class ChipLayer:
    """One core's worth of a chip-ready model.

    Attributes:
        index: position of the Conv2d in the chip-ready ``nn.Sequential``.
        conv: the ``nn.Conv2d``; ``neuron``: its ``IAFSqueeze`` (or None if missing).
        neuron_index: position of the neuron (or -1).
        pooling: ``(ky, kx)`` of the SumPool2d after the neuron ((1, 1) without one);
            ``pool_stride``: its stride.
        input_shape: (C, H, W) entering the conv; ``output_shape``: (C, H, W) of the conv output.
    """

    index: int
    conv: nn.Conv2d
    neuron: Optional[nn.Module]
    neuron_index: int
    pooling: tuple[int, int]
    pool_stride: tuple[int, int]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]

    @property
    def where(self) -> str:
        return f"layer {self.index} (Conv2d)"

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        c, h, w = self.output_shape
        return c, h // self.pool_stride[0], w // self.pool_stride[1]

    def memory(self) -> dict[str, int]:
        """Kernel, neuron and bias memory entries this layer needs (ARCHITECTURE.md formulas)."""
        c_out, c_in, kh, kw = self.conv.weight.shape
        _, h, w = self.output_shape
        return {"kernel": kernel_memory_entries(c_in, c_out, kh, kw),
                "neuron": neuron_memory_entries(c_out, h, w),
                "bias": bias_memory_entries(c_out)}


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def parse_chip_layers(model: nn.Sequential, input_shape: Sequence[int]) -> tuple[list[ChipLayer], list[Violation]]:
    """Group ``model`` into chip layers; return them with the structural violations found.

    Layer order per core: Conv2d -> IAF -> [SumPool2d]. Linear layers must have been converted
    (:func:`flexsnn.converters.chip_model.chip_ready_model`).
    """
    import sinabs.layers as sl

    layers = list(model) if isinstance(model, nn.Sequential) else [model]
    shape = tuple(int(v) for v in input_shape)
    out: list[ChipLayer] = []
    bad: list[Violation] = []
    i = 0
    n = len(layers)
    while i < n:
        layer = layers[i]
        name = type(layer).__name__
        if isinstance(layer, (nn.Flatten, nn.Identity, nn.Dropout)) and all(
                isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)) for m in layers[i:]):
            break  # trailing reshapes do not reach the chip
        if isinstance(layer, nn.Linear):
            bad.append(Violation(f"layer {i} (Linear)", "layer type", "Linear", "Conv2d on the chip",
                                 "convert the model with chip_ready_model (Linear -> Conv2d)"))
            i += 1
            continue
        if not isinstance(layer, nn.Conv2d):
            expected = "Conv2d" if not out else "Conv2d (a core starts with a convolution)"
            bad.append(Violation(f"layer {i} ({name})", "layer order", name, expected,
                                 "each core is Conv2d -> IAF -> optional SumPool2d; remove or move this layer"))
            i += 1
            continue
        conv = layer
        neuron, n_idx = None, -1
        pool, pool_stride = (1, 1), (1, 1)
        j = i + 1
        if j < n and isinstance(layers[j], sl.IAF):
            neuron, n_idx = layers[j], j
            j += 1
        else:
            got = type(layers[j]).__name__ if j < n else "end of model"
            bad.append(Violation(f"layer {i} (Conv2d)", "layer order", f"followed by {got}",
                                 "Conv2d followed by an IAF neuron layer",
                                 "add an IAFSqueeze after the convolution"))
        if neuron is not None and j < n and isinstance(layers[j], (sl.SumPool2d, nn.AvgPool2d)):
            p = layers[j]
            pool = _pair(p.kernel_size)
            pool_stride = _pair(p.stride if p.stride is not None else p.kernel_size)
            if isinstance(p, nn.AvgPool2d):
                bad.append(Violation(f"layer {j} (AvgPool2d)", "layer type", "AvgPool2d", "SumPool2d",
                                     "convert with chip_ready_model (AvgPool -> SumPool, next weights / k²)"))
            j += 1
        try:
            with torch.no_grad():
                y = conv(torch.zeros(1, *shape))
            out_shape = tuple(int(v) for v in y.shape[1:])
        except RuntimeError as err:
            bad.append(Violation(f"layer {i} (Conv2d)", "input shape", shape,
                                 f"{conv.in_channels} channels and at least the kernel size",
                                 f"fix the layer's geometry ({err})"))
            break
        cl = ChipLayer(i, conv, neuron, n_idx, pool, pool_stride, shape, out_shape)  # type: ignore[arg-type]
        out.append(cl)
        shape = cl.pooled_shape
        i = j
    return out, bad


# --------------------------------------------------------------------------- rules
Rule = Callable[[list[ChipLayer], tuple[int, int, int], ChipLimits], list[Violation]]


def rule_core_count(layers, input_shape, limits) -> list[Violation]:
    """At most ``limits.n_cores`` chip layers."""
    if len(layers) <= limits.n_cores:
        return []
    return [Violation(f"layer {layers[limits.n_cores].index} (Conv2d)", "number of cores", len(layers),
                      f"<= {limits.n_cores} layers (one core each)",
                      "merge layers or remove some: the chip has only "
                      f"{limits.n_cores} cores")]


def rule_input_channels(layers, input_shape, limits) -> list[Violation]:
    """DVS input: at most ``max_dvs_channels`` channels (polarities)."""
    c = input_shape[0]
    if c <= limits.max_dvs_channels:
        return []
    return [Violation("input", "input channels", c, f"<= {limits.max_dvs_channels} (DVS polarities)",
                      "feed at most 2 polarity channels")]


def rule_input_size(layers, input_shape, limits) -> list[Violation]:
    """Each core's input map at most ``max_input_size`` on each side."""
    out = []
    for cl in layers:
        _, h, w = cl.input_shape
        if max(h, w) > limits.max_input_size:
            m = limits.max_input_size
            out.append(Violation(cl.where, "input size", f"{h}×{w}", f"<= {m}×{m}",
                                 "pool or crop the input (DVS pooling 2 or 4) or add a strided layer earlier"))
    return out


def rule_output_size(layers, input_shape, limits) -> list[Violation]:
    """Each core's output map (before pooling) at most ``max_output_size`` on each side."""
    out = []
    for cl in layers:
        _, h, w = cl.output_shape
        if max(h, w) > limits.max_output_size:
            m = limits.max_output_size
            out.append(Violation(cl.where, "output size", f"{h}×{w}", f"<= {m}×{m}",
                                 "use a stride of 2 in this convolution or pool its input"))
    return out


def rule_features(layers, input_shape, limits) -> list[Violation]:
    """At most ``max_features`` channels in and out of each core."""
    out = []
    for cl in layers:
        for fld, v in (("input features", cl.conv.in_channels), ("output features", cl.conv.out_channels)):
            if v > limits.max_features:
                out.append(Violation(cl.where, fld, v, f"<= {limits.max_features}",
                                     "use fewer channels"))
    return out


def rule_kernel(layers, input_shape, limits) -> list[Violation]:
    """Square kernels of at most ``max_kernel_size``."""
    out = []
    m = limits.max_kernel_size
    for cl in layers:
        kh, kw = _pair(cl.conv.kernel_size)
        if kh != kw:
            out.append(Violation(cl.where, "kernel_size", f"{kh}×{kw}", "square", f"use a {max(kh, kw)}×{max(kh, kw)} kernel"))
        if max(kh, kw) > m:
            half = (max(kh, kw) + 2) // 2  # two k×k convs see 2k-1 pixels
            out.append(Violation(cl.where, "kernel_size", f"{kh}×{kw}", f"<= {m}×{m}",
                                 f"use two {half}×{half} convolutions or a stride (pool the input first)"))
    return out


def rule_stride(layers, input_shape, limits) -> list[Violation]:
    """Strides in ``limits.strides``."""
    out = []
    for cl in layers:
        for axis, s in zip("yx", _pair(cl.conv.stride)):
            if s not in limits.strides:
                out.append(Violation(cl.where, f"stride_{axis}", s, f"one of {limits.strides}",
                                     "use stride 1, 2, 4 or 8 (add a pooling for other factors)"))
    return out


def rule_padding(layers, input_shape, limits) -> list[Violation]:
    """Padding 0..``max_padding``."""
    out = []
    for cl in layers:
        pad = cl.conv.padding
        if isinstance(pad, str):
            out.append(Violation(cl.where, "padding", pad, "explicit integers", "give integer padding"))
            continue
        for axis, p in zip("yx", _pair(pad)):
            if not 0 <= p <= limits.max_padding:
                out.append(Violation(cl.where, f"padding_{axis}", p, f"0..{limits.max_padding}",
                                     "reduce the padding (or pad the input with a larger DVS crop)"))
    return out


def rule_pooling(layers, input_shape, limits) -> list[Violation]:
    """Sum pooling 1/2/4, square, stride = kernel."""
    out = []
    for cl in layers:
        ky, kx = cl.pooling
        where = f"layer {cl.neuron_index + 1} (SumPool2d after layer {cl.index})"
        if ky != kx:
            out.append(Violation(where, "pooling", f"{ky}×{kx}", "square", "use a square pooling"))
        if ky not in limits.poolings or kx not in limits.poolings:
            out.append(Violation(where, "pooling", f"{ky}×{kx}", f"one of {limits.poolings}",
                                 "pool by 1, 2 or 4 (two poolings of 2 make 4; 8 needs a strided conv)"))
        if cl.pool_stride != cl.pooling:
            out.append(Violation(where, "pooling stride", cl.pool_stride, f"= kernel {cl.pooling}",
                                 "use SumPool2d(k) with stride k"))
    return out


def rule_neuron(layers, input_shape, limits) -> list[Violation]:
    """Neurons: scalar threshold, ``min_v_mem`` set and below it, Multi/SingleSpike + subtract/zero reset."""
    import sinabs.activation as sa

    out = []
    for cl in layers:
        nrn = cl.neuron
        if nrn is None:
            continue
        where = f"layer {cl.neuron_index} ({type(nrn).__name__})"
        thr = torch.as_tensor(nrn.spike_threshold)
        if thr.numel() != 1:
            out.append(Violation(where, "spike_threshold", f"tensor of {thr.numel()} values",
                                 "one scalar per layer", "use one threshold for the whole layer"))
            continue
        if nrn.min_v_mem is None:
            out.append(Violation(where, "min_v_mem", None, "a number (the chip's threshold_low)",
                                 "set min_v_mem (e.g. -threshold): with None sinabs' discretization "
                                 "uses -2^15 as the lower bound, which shrinks the scale and silently "
                                 "zeroes small weights"))
        elif float(nrn.min_v_mem) >= float(thr):
            out.append(Violation(where, "min_v_mem", float(nrn.min_v_mem), f"< threshold {float(thr)}",
                                 "set min_v_mem below the threshold"))
        if float(thr) <= 0:
            out.append(Violation(where, "spike_threshold", float(thr), "> 0", "use a positive threshold"))
        if nrn.spike_fn not in (sa.MultiSpike, sa.SingleSpike):
            out.append(Violation(where, "spike_fn", getattr(nrn.spike_fn, "__name__", str(nrn.spike_fn)),
                                 "MultiSpike or SingleSpike", "use MultiSpike (the chip's neuron)"))
        if not isinstance(nrn.reset_fn, (sa.MembraneSubtract, sa.MembraneReset)):
            out.append(Violation(where, "reset_fn", type(nrn.reset_fn).__name__,
                                 "MembraneSubtract or MembraneReset", "use a subtract reset"))
        elif isinstance(nrn.reset_fn, sa.MembraneSubtract) and nrn.reset_fn.subtract_value is not None:
            out.append(Violation(where, "reset_fn", "subtract_value set", "subtract the threshold",
                                 "use MembraneSubtract()"))
        if getattr(nrn, "tau_syn", None) is not None:
            out.append(Violation(where, "tau_syn", nrn.tau_syn, "None", "use IAFSqueeze without synapses"))
    return out


def rule_memory(layers, input_shape, limits) -> list[Violation]:
    """Each layer's kernel/neuron/bias memory must fit at least one core."""
    out = []
    for cl in layers:
        mem = cl.memory()
        fits = [c for c in range(limits.n_cores)
                if mem["kernel"] <= limits.kernel_memory[c] and mem["neuron"] <= limits.neuron_memory[c]
                and mem["bias"] <= limits.bias_memory[c]]
        if fits:
            continue
        for kind, caps in (("kernel", limits.kernel_memory), ("neuron", limits.neuron_memory),
                           ("bias", limits.bias_memory)):
            if mem[kind] > max(caps):
                fix = {"kernel": "use fewer channels or a smaller kernel (kernel entries = c_in · "
                                 "2^(⌈log2 k²⌉ + ⌈log2 c_out⌉))",
                       "neuron": "reduce the output map with a stride or pooling before this layer, or "
                                 "fewer channels (neurons = c_out · 2^(⌈log2 H⌉ + ⌈log2 W⌉))",
                       "bias": "use fewer output channels"}[kind]
                out.append(Violation(cl.where, f"{kind} memory", mem[kind],
                                     f"<= {max(caps)} entries (largest core), over by {mem[kind] - max(caps)}",
                                     fix))
        if not any(mem[k] > max(c) for k, c in (("kernel", limits.kernel_memory),
                                                ("neuron", limits.neuron_memory),
                                                ("bias", limits.bias_memory))):
            out.append(Violation(cl.where, "kernel+neuron memory", (mem["kernel"], mem["neuron"]),
                                 "one core with both (cores with the most kernel memory have little neuron memory)",
                                 "shrink the output map or the channels"))
    return out


def rule_destinations(layers, input_shape, limits) -> list[Violation]:
    """A sequential model uses one destination per core (always <= the limit); kept for graphs."""
    return []


RULES: tuple[Rule, ...] = (
    rule_core_count, rule_input_channels, rule_input_size, rule_output_size, rule_features,
    rule_kernel, rule_stride, rule_padding, rule_pooling, rule_neuron, rule_memory,
    rule_destinations,
)


def model_violations(model: nn.Sequential, input_shape: Sequence[int], *,
                     limits: ChipLimits = SPECK2E) -> list[Violation]:
    """Every violation of ``model`` (structure first, then each rule in :data:`RULES`)."""
    shape = tuple(int(v) for v in input_shape)
    layers, violations = parse_chip_layers(model, shape)
    for rule in RULES:
        violations.extend(rule(layers, shape, limits))
    if not layers and not violations:
        violations.append(Violation("model", "layers", 0, ">= 1 Conv2d -> IAF layer", "add a layer"))
    return violations


def validate(model: nn.Sequential, input_shape: Sequence[int], *, limits: ChipLimits = SPECK2E) -> list[ChipLayer]:
    """Check a chip-ready model against ``limits``; return its chip layers if it fits.

    Raises:
        ChipConstraintError: listing *every* violation (layer index and type, limit, value, fix).
    """
    shape = tuple(int(v) for v in input_shape)
    violations = model_violations(model, shape, limits=limits)
    if violations:
        raise ChipConstraintError(violations, chip=limits.name)
    return parse_chip_layers(model, shape)[0]
