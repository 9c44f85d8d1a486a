"""Checks of a :class:`~flexsnn.converters.chip_image.ChipImage`: what the chip and every
backend rely on.

:func:`check_chip_image` is the one gate: ``ChipImage.save``/``load``, ``flexsnn validate`` and
every backend's ``load`` call it. It checks, in order,

1. exact field types (ints are ints, not floats, bools or strings; bools are bools; tuples have
   their length; ``reset_mode`` is a known value), so nothing below runs on a wrong type;
2. geometry: every shape is >= 1 on each axis, every output shape follows from the core's
   input shape, kernel, stride and padding, every core's input shape follows from its
   source's output shape and pooling (the DVS input's shape for the input's destinations);
3. values: thresholds ``1 <= threshold_high`` and ``threshold_low <= 0`` within the state
   bits, weights and biases within their bits, biases only with ``leak_enabled``;
4. chip limits: cores, sizes, strides, paddings, poolings, destinations, memory, readout.

Recurrent images (a core that feeds itself, or a cycle of cores) are allowed, since the chip
supports feedback; :func:`chip_image_warnings` says when a cycle's loop gain can reach 1, i.e.
one event can start a cascade that never dies out.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.errors import ChipConstraintError, Violation

if TYPE_CHECKING:
    from flexsnn.converters.chip_image import ChipImage, CoreConfig

RESET_MODES = ("subtract", "zero")


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _is_ints(v: Any, n: int) -> bool:
    return isinstance(v, (tuple, list)) and len(v) == n and all(_is_int(x) for x in v)


def _type_violations(image: "ChipImage") -> list[Violation]:
    """Every field whose Python type is wrong (checked before any value is used)."""
    out: list[Violation] = []

    def need(ok: bool, where: str, fld: str, value: Any, expected: str) -> None:
        if not ok:
            out.append(Violation(where, fld, repr(value)[:60], expected, "build the field with that type"))

    inp = image.input
    need(_is_ints(inp.shape, 3), "input", "shape", inp.shape, "3 integers (C, H, W)")
    need(isinstance(inp.destinations, (tuple, list)) and all(_is_int(d) for d in inp.destinations),
         "input", "destinations", inp.destinations, "a tuple of core ids")
    need(_is_int(inp.pooling), "input", "pooling", inp.pooling, "an integer")
    need(_is_bool(inp.merge_polarities), "input", "merge_polarities", inp.merge_polarities, "a bool")
    need(_is_int(image.output_core), "chip image", "output_core", image.output_core, "an integer core id")
    need(isinstance(image.chip, str), "chip image", "chip", image.chip, "a string")
    need(isinstance(image.source, str), "chip image", "source", image.source, "a string")
    need(isinstance(image.layer_scales, (tuple, list)) and all(
        isinstance(s, (int, float)) and not _is_bool(s) and math.isfinite(s) for s in image.layer_scales),
        "chip image", "layer_scales", image.layer_scales, "finite numbers")
    if image.readout is not None:
        need(_is_int(image.readout.num_classes), "readout", "num_classes", image.readout.num_classes, "an integer")
        need(_is_bool(image.readout.channel_erratum), "readout", "channel_erratum",
             image.readout.channel_erratum, "a bool")
    if not isinstance(image.cores, (tuple, list)):
        need(False, "chip image", "cores", image.cores, "a tuple of CoreConfig")
        return out
    for i, c in enumerate(image.cores):
        where = f"cores[{i}]"
        for fld in ("core", "layer", "kernel_size", "threshold_high", "threshold_low"):
            need(_is_int(getattr(c, fld, None)), where, fld, getattr(c, fld, None), "an integer")
        for fld, n in (("input_shape", 3), ("output_shape", 3), ("stride", 2), ("padding", 2)):
            need(_is_ints(getattr(c, fld, None), n), where, fld, getattr(c, fld, None), f"{n} integers")
        need(isinstance(c.name, str), where, "name", c.name, "a string")
        need(c.reset_mode in RESET_MODES if isinstance(c.reset_mode, str) else False, where, "reset_mode",
             c.reset_mode, f"one of {RESET_MODES}")
        need(_is_bool(c.leak_enabled), where, "leak_enabled", c.leak_enabled, "a bool")
        for fld in ("weights", "biases"):
            need(isinstance(getattr(c, fld, None), np.ndarray), where, fld, type(getattr(c, fld, None)).__name__,
                 "a NumPy integer array")
        dests = c.destinations
        if not isinstance(dests, (tuple, list)):
            need(False, where, "destinations", dests, "a tuple of Destination")
            continue
        for j, d in enumerate(dests):
            need(_is_int(getattr(d, "core", None)) and _is_int(getattr(d, "pooling", None)),
                 f"{where}.destinations[{j}]", "core/pooling", d, "integers")
    return out


def chip_image_violations(image: "ChipImage", limits: ChipLimits = SPECK2E) -> list[Violation]:
    """Every way ``image`` breaks ``limits`` or the rules above (empty list when it fits)."""
    out = _type_violations(image)
    if out:
        return out

    def add(where: str, fld: str, value: Any, limit: str, fix: str) -> None:
        out.append(Violation(where, fld, value, limit, fix))

    ids = [c.core for c in image.cores]
    if len(set(ids)) != len(ids):
        add("chip image", "cores", ids, "each core used once", "assign each layer its own core")
    if len(image.cores) > limits.n_cores:
        add("chip image", "number of cores", len(image.cores), f"<= {limits.n_cores}",
            "use fewer layers")
    c_in, h_in, w_in = image.input.shape
    if min(image.input.shape) < 1:
        add("input", "shape", tuple(image.input.shape), ">= 1 on each axis", "re-export")
    if c_in > limits.max_dvs_channels:
        add("input", "channels", c_in, f"<= {limits.max_dvs_channels}", "merge polarities")
    if max(h_in, w_in) > limits.max_input_size:
        add("input", "size", (h_in, w_in), f"<= {limits.max_input_size}", "pool or crop the input")
    if image.input.pooling not in limits.poolings:
        add("input", "pooling", image.input.pooling, f"one of {limits.poolings}", "use 1, 2 or 4")
    if not image.input.destinations:
        add("input", "destinations", (), ">= 1 core", "connect the input to the first core")
    for c in image.cores:
        where = f"core {c.core} (layer {c.layer} {c.name})"
        if not 0 <= c.core < limits.n_cores:
            add(where, "core id", c.core, f"0..{limits.n_cores - 1}", "use an existing core")
            continue
        if c.weights.dtype != np.int8:
            add(where, "weights dtype", str(c.weights.dtype), "int8", "discretize the layer")
        if c.biases.dtype.kind not in "iu":
            add(where, "biases dtype", str(c.biases.dtype), "int16", "discretize the layer")
            continue
        if c.weights.ndim != 4 or c.weights.shape[2] != c.weights.shape[3] or \
                c.weights.shape[2] != c.kernel_size:
            add(where, "weights shape", tuple(c.weights.shape),
                f"[c_out, c_in, {c.kernel_size}, {c.kernel_size}]", "re-export")
            continue
        if min(c.input_shape) < 1 or min(c.output_shape) < 1 or c.kernel_size < 1:
            add(where, "shapes", (tuple(c.input_shape), tuple(c.output_shape), c.kernel_size),
                ">= 1 on each axis (a kernel larger than its padded input leaves no output)",
                "use a smaller kernel, more padding or a larger input")
            continue
        _core_values(c, add, where, limits)
        for d in c.destinations:
            if d.pooling not in limits.poolings:
                add(where, "pooling", d.pooling, f"one of {limits.poolings}", "use 1, 2 or 4")
            if d.core not in ids:
                add(where, "destination core", d.core, f"a used core {ids}", "re-export")
                continue
            dst = image.core(d.core)
            pooled = (c.weights.shape[0], c.output_shape[1] // max(d.pooling, 1),
                      c.output_shape[2] // max(d.pooling, 1))
            if tuple(dst.input_shape) != pooled:
                add(where, "destination shape", pooled, f"core {d.core} expects {tuple(dst.input_shape)}",
                    "re-export")
        mem = c.memory()
        for kind, cap in (("kernel", limits.kernel_memory[c.core]),
                          ("neuron", limits.neuron_memory[c.core]),
                          ("bias", limits.bias_memory[c.core])):
            if mem[kind] > cap:
                add(where, f"{kind} memory", mem[kind], f"<= {cap} entries on core {c.core}",
                    "map the layer to a larger core or shrink it")
    if image.output_core not in ids:
        add("chip image", "output_core", image.output_core, f"a used core {ids}", "re-export")
    for d in image.input.destinations:
        if d not in ids:
            add("input", "destination core", d, f"a used core {ids}", "re-export")
        elif tuple(image.core(d).input_shape) != tuple(image.input.shape):
            add(f"core {d}", "input_shape", tuple(image.core(d).input_shape),
                f"the DVS input's shape {tuple(image.input.shape)} (after input pooling "
                f"{image.input.pooling})", "re-export")
    if image.readout is not None:
        if not 1 <= image.readout.num_classes <= limits.readout_classes:
            add("readout", "num_classes", image.readout.num_classes,
                f"1..{limits.readout_classes}", "read the output core's events instead")
        elif image.output_core in ids:
            n_ch = image.core(image.output_core).output_shape[0]
            need = image.readout.channel_of_class(image.readout.num_classes - 1) + 1
            if need > n_ch:
                add("readout", "channels", n_ch, f">= {need} output channels for the readout mapping",
                    "place class k on channel 4*(k-1) (Speck2e erratum) or disable the readout")
    return out


def _core_values(c: "CoreConfig", add, where: str, limits: ChipLimits) -> None:
    """Value and limit checks of one core whose types and shapes are sane."""
    wlo, whi = limits.weight_range
    blo, bhi = limits.bias_range
    slo, shi = limits.state_range
    w64 = c.weights.astype(np.int64)
    if w64.size and (w64.min() < wlo or w64.max() > whi):
        add(where, "weight value", (int(w64.min()), int(w64.max())), f"{wlo}..{whi}", "re-discretize")
    if c.biases.shape != (c.weights.shape[0],):
        add(where, "biases shape", tuple(c.biases.shape), f"({c.weights.shape[0]},)", "re-export")
    elif c.biases.size and (int(c.biases.min()) < blo or int(c.biases.max()) > bhi):
        add(where, "bias value", (int(c.biases.min()), int(c.biases.max())), f"{blo}..{bhi}", "re-discretize")
    if c.biases.size and np.any(c.biases != 0) and not c.leak_enabled:
        add(where, "biases", "non-zero", "zero unless leak_enabled", "set leak_enabled or zero them")
    c_out, ci, k, _ = c.weights.shape
    if c.output_shape[0] != c_out or c.input_shape[0] != ci:
        add(where, "channels", (c.input_shape[0], c.output_shape[0]), f"weights say ({ci}, {c_out})", "re-export")
    if c.input_shape[0] > limits.max_features:
        add(where, "input features", c.input_shape[0], f"<= {limits.max_features}", "fewer channels")
    if c_out > limits.max_features:
        add(where, "output features", c_out, f"<= {limits.max_features}", "fewer channels")
    if max(c.input_shape[1:]) > limits.max_input_size:
        add(where, "input size", c.input_shape[1:], f"<= {limits.max_input_size}", "pool earlier")
    if max(c.output_shape[1:]) > limits.max_output_size:
        add(where, "output size", c.output_shape[1:], f"<= {limits.max_output_size}",
            "add stride or pooling before this layer")
    if k > limits.max_kernel_size:
        add(where, "kernel_size", k, f"<= {limits.max_kernel_size}", "split the convolution")
    for axis, s in zip("yx", c.stride):
        if s not in limits.strides:
            add(where, f"stride_{axis}", s, f"one of {limits.strides}", "use 1, 2, 4 or 8")
    for axis, p in zip("yx", c.padding):
        if not 0 <= p <= limits.max_padding:
            add(where, f"padding_{axis}", p, f"0..{limits.max_padding}", "reduce the padding")
    if all(s >= 1 for s in c.stride):
        exp_h = (c.input_shape[1] + 2 * c.padding[0] - k) // c.stride[0] + 1
        exp_w = (c.input_shape[2] + 2 * c.padding[1] - k) // c.stride[1] + 1
        if (exp_h, exp_w) != tuple(c.output_shape[1:]):
            add(where, "output_shape", tuple(c.output_shape[1:]), f"({exp_h}, {exp_w}) from the geometry",
                "re-export")
    if not 1 <= c.threshold_high <= shi or not slo <= c.threshold_low <= 0:
        add(where, "thresholds", (c.threshold_low, c.threshold_high),
            f"{slo} <= threshold_low <= 0 < 1 <= threshold_high <= {shi}", "re-discretize")
    if len(c.destinations) > limits.max_destinations:
        add(where, "destinations", len(c.destinations), f"<= {limits.max_destinations}", "remove a branch")


def check_chip_image(image: "ChipImage", *, limits: ChipLimits = SPECK2E,
                     source: str = "chip image") -> "ChipImage":
    """Raise :class:`ChipConstraintError` listing every violation; return ``image`` if it fits."""
    violations = chip_image_violations(image, limits)
    if violations:
        raise ChipConstraintError(violations, chip=f"{limits.name} ({source})")
    return image


# ---- recurrence ------------------------------------------------------------------------------
def core_gain(core: "CoreConfig") -> float:
    """How many spikes one input event can cause in ``core`` in the long run, at most.

    For each input channel: the sum of its positive weights over every output channel and
    kernel position, divided by ``threshold_high`` (a subtract or zero reset spends at least
    ``threshold_high`` of charge per spike). The maximum over input channels. It is an upper
    bound as long as the ``threshold_low`` floor is not reached (a clipped negative input leaves
    charge the bound does not count), so a loop gain below 1 is a strong hint, not a proof.
    """
    w = np.clip(core.weights.astype(np.int64), 0, None)
    per_channel = w.sum(axis=(0, 2, 3)) if w.size else np.zeros(1)
    return float(per_channel.max(initial=0)) / max(int(core.threshold_high), 1)


def cycles(image: "ChipImage") -> list[tuple[int, ...]]:
    """Every simple cycle of the destination graph, each as core ids starting at its smallest."""
    graph = {c.core: [d.core for d in c.destinations] for c in image.cores}
    found: list[tuple[int, ...]] = []

    def walk(start: int, node: int, path: list[int]) -> None:
        for nxt in graph.get(node, []):
            if nxt == start:
                found.append(tuple(path))
            elif nxt > start and nxt not in path and nxt in graph:
                walk(start, nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return sorted(set(found))


def chip_image_warnings(image: "ChipImage") -> list[str]:
    """Legal but risky properties of a valid image (today: cycles whose loop gain can reach 1)."""
    out = []
    for cyc in cycles(image):
        gain = math.prod(core_gain(image.core(c)) for c in cyc)
        if gain >= 1.0:
            path = " -> ".join(str(c) for c in cyc + (cyc[0],))
            out.append(f"cycle of cores {path}: loop gain up to {gain:.3g} (>= 1), so one event can start a "
                       "cascade that never dies out; the simulator stops it at its event limit. Lower the "
                       "feedback weights or raise threshold_high")
    return out
