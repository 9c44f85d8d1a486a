"""Checkpoint or model -> chip-ready model -> validate -> map -> discretize -> :class:`ChipImage`.

:func:`export_chip_image` is the one entry point; each step is its own module
(:mod:`.chip_model`, :mod:`.validate`, :mod:`.mapping`, :mod:`.discretize`) and returns a new
object. Readout: Speck2e's readout block reads class k (1-based) from the output core's channel
``4(k-1)`` (erratum); with ``readout=True`` the output layer is widened so that class k's
weights sit on that channel (the other channels get zero weights and never fire); otherwise the
output core's events on channel k are the class counts.

Sources (:func:`export_chip_image`): a flexsnn checkpoint, any ``nn.Sequential``-like network
of torch/sinabs/flexsnn layers (:mod:`.chip_model`), or a NIR graph / ``.nir`` file
(:mod:`.from_nir`). ``chip`` picks a device of the Speck family (:mod:`.chips`).

Nothing is lost silently:

- a pooling after the last layer (the chip sends the output core's events unpooled) is applied
  on the way to the output as a per-channel sum, which gives the pooled map's class counts
  exactly when the pooling cuts off no row or column; otherwise it is refused (the image notes
  ``output_pooling``);
- a layer whose integer weights reach ``threshold_high`` gets a warning
  (:func:`~flexsnn.converters.discretize.reach_threshold_warning`);
- each layer's threshold rounding error is reported (:class:`LayerReport`, and the image's
  ``notes["thresholds_exact"]``, read by :func:`threshold_rounding` for ``flexsnn inspect``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.converters.chip_image import (
    ChipImage,
    CoreConfig,
    Destination,
    InputConfig,
    ReadoutConfig,
    check_chip_image,
)
from flexsnn.converters.chip_model import chip_ready_model, load_source_model
from flexsnn.converters.discretize import (
    LOSS_WARN_FRACTION,
    DiscreteLayer,
    discretize_layer,
    reach_threshold_warning,
)
from flexsnn.converters.mapping import map_layers_to_cores
from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.converters.validate import ChipLayer, validate
from flexsnn.errors import ChipConstraintError, ConfigError, Violation

log = logging.getLogger(__name__)

DVS_INPUT_SHAPE = (2, 34, 34)
#: ChipImage note: JSON list, per core, of threshold x scale before rounding
THRESHOLDS_NOTE = "thresholds_exact"


@dataclass(frozen=True)
class LayerReport:
    """Per chip layer: ``index`` in the chip-ready model, ``core``, ``name`` (source layer),
    discretization ``scale``, weight counts (``n_weights``, ``n_clipped``, ``n_zeroed``),
    integer thresholds, memory entries used."""

    index: int
    core: int
    name: str
    scale: float
    n_weights: int
    n_clipped: int
    n_zeroed: int
    threshold_high: int
    threshold_low: int
    memory: dict[str, int]
    threshold_exact: float = float("nan")

    @property
    def threshold_error(self) -> float:
        """Relative rounding error of the threshold, ``(threshold_high - exact) / exact``."""
        return (self.threshold_high - self.threshold_exact) / self.threshold_exact


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_chip_image` did: per-layer facts, core assignment, readout decision,
    folded BatchNorms, leak layers, warnings (also logged)."""

    layers: tuple[LayerReport, ...]
    core_assignment: tuple[int, ...]
    readout: Optional[str]
    folded_bn: int
    leak_layers: tuple[int, ...]
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """Plain-text table, one row per layer."""
        head = f"{'layer':>5} {'core':>4} {'name':<12} {'scale':>10} {'weights':>8} {'clipped':>8} {'zeroed':>7} " \
               f"{'thr_hi':>7} {'thr_lo':>7} {'thr_exact':>10} {'thr_err':>8}"
        rows = [f"{r.index:>5} {r.core:>4} {r.name:<12} {r.scale:>10.4g} {r.n_weights:>8} {r.n_clipped:>8} "
                f"{r.n_zeroed:>7} {r.threshold_high:>7} {r.threshold_low:>7} {r.threshold_exact:>10.3f} "
                f"{100 * r.threshold_error:>7.2f}%" for r in self.layers]
        return "\n".join([head, *rows])


def readout_possible(num_classes: int, limits: ChipLimits = SPECK2E) -> tuple[bool, str]:
    """Whether a readout can serve ``num_classes`` classes, and why not."""
    if not 1 <= num_classes <= limits.readout_classes:
        return False, f"{num_classes} classes > {limits.readout_classes} readout classes"
    return True, f"class k on channel 4(k-1): the output layer needs {4 * (num_classes - 1) + 1} channels"


def widen_for_readout(model: nn.Sequential, out_index: int, num_classes: int) -> nn.Sequential:
    """Copy of ``model`` whose conv at ``out_index`` has class k (0-based) on channel 4k (erratum)."""
    from flexsnn.converters.chip_model import copy_model

    new = copy_model(model)
    old = new[out_index]
    n_ch = 4 * (num_classes - 1) + 1
    conv = nn.Conv2d(old.in_channels, n_ch, old.kernel_size, stride=old.stride, padding=old.padding, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for k in range(num_classes):
            conv.weight[4 * k] = old.weight[k]
            conv.bias[4 * k] = old.bias[k] if old.bias is not None else 0.0
    new[out_index] = conv
    return new


def _is_nir_source(obj: Any) -> bool:
    if isinstance(obj, (str, Path)):
        return Path(obj).suffix.lower() == ".nir"
    return type(obj).__module__.startswith("nir") and type(obj).__name__ == "NIRGraph"


def _source_model(obj: Any, input_shape: Optional[Sequence[int]]):
    """``(model, input_shape, source, names, readout)``: ``names`` renames layers and ``readout``
    is ``(num_classes, channel_erratum)`` of an already widened output layer (NIR sources from
    flexsnn), else None."""
    from flexsnn.models.checkpoint import check_finite

    if _is_nir_source(obj):
        from flexsnn.converters.from_nir import graph_readout, nir_to_sequential, read_nir, resolve_input_shape

        graph = read_nir(obj) if isinstance(obj, (str, Path)) else obj
        source = str(obj) if isinstance(obj, (str, Path)) else "NIR graph"
        model, names = nir_to_sequential(graph, where=source)  # refused nodes first: they say most
        check_finite(dict(model.state_dict()), source)  # NaN/Inf refused by layer name
        shape = resolve_input_shape(graph, input_shape, source)
        return model, shape, source, names, graph_readout(graph)
    model, source = load_source_model(obj)
    check_finite(dict(model.state_dict()), source or "model")  # NaN/Inf refused by layer name
    shape = tuple(int(v) for v in (input_shape if input_shape is not None else DVS_INPUT_SHAPE))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError("input_shape", input_shape, "three positive integers (C, H, W)")
    return model, shape, source, None, None


def _trailing_pooling(layers: Sequence[ChipLayer], limits: ChipLimits) -> Optional[int]:
    """The pooling after the last layer (None without one); refuses one that cuts off rows."""
    last = layers[-1]
    if last.pooling == (1, 1) and last.pool_stride == (1, 1):
        return None
    p = last.pool_stride[0]
    _, h, w = last.output_shape
    if h % p or w % p:
        raise ChipConstraintError([Violation(
            f"layer {last.neuron_index + 1} (SumPool2d after the last layer {last.index})", "trailing pooling",
            f"{p}×{p} on a {h}×{w} map", "a map divisible by the pooling",
            "the chip sends the output core's events unpooled; flexsnn applies a trailing pooling as a "
            "per-channel sum on the way to the output, which equals the pooled counts only when no row or "
            "column is cut off: remove the pooling or change the geometry so the map divides")], limits.name)
    log.info("layer %d: trailing %dx%d pooling applied on the way to the output (per-channel sums of the "
             "%dx%d map; exact, the map divides)", last.index, p, p, h, w)
    return p


def _with_source_names(err: ChipConstraintError, names: Sequence[str]) -> ChipConstraintError:
    """``err`` with each ``layer i (Type)`` completed by the source layer's name (e.g. a NIR node)."""
    def named(where: str) -> str:
        m = re.match(r"^layer (\d+) \((\w+)\)", where)
        if not m or int(m.group(1)) >= len(names):
            return where
        return f"layer {m.group(1)} ({m.group(2)}, from {names[int(m.group(1))]!r}){where[m.end():]}"

    return ChipConstraintError([replace(v, where=named(v.where)) for v in err.violations], err.chip)


def export_chip_image(
    model_or_checkpoint: Any,
    *,
    input_shape: Optional[Sequence[int]] = None,
    allow_leak: bool = False,
    core_order: Optional[Sequence[int]] = None,
    readout: bool = False,
    limits: ChipLimits = SPECK2E,
    chip: Optional[str] = None,
) -> tuple[ChipImage, ExportReport]:
    """Export a model to a :class:`ChipImage`.

    Args:
        model_or_checkpoint: a TFSNN, any ``nn.Sequential``-like network of torch/sinabs layers
            (Conv2d, Linear, IAF/IAFSqueeze, SumPool2d, AvgPool2d, Flatten, Dropout, BatchNorm),
            a ``.safetensors`` checkpoint path, a ``nir.NIRGraph`` or a ``.nir`` path.
        input_shape: ``(C, H, W)`` of the DVS input. Default: a NIR graph's Input node, else
            N-MNIST ``(2, 34, 34)``.
        allow_leak: accept biases as a leak (a warning explains what the chip does with them).
        core_order: core id per chip layer (checked); default: found by bipartite matching.
        readout: use the readout block (only when possible; see module docstring).
        limits: the chip's limits (ignored when ``chip`` is given).
        chip: a device of :data:`flexsnn.converters.chips.PROFILES` (``speck2e``, ``speck2f``,
            ``dynapcnn``); a fact the export needs that no source states is refused.

    Returns:
        ``(image, report)``; the image passes :func:`check_chip_image`.

    Raises:
        ChipConstraintError: every limit the model breaks, or an impossible mapping/readout.
    """
    from flexsnn.converters.chips import PROFILES, get_profile

    profile = get_profile(chip) if chip is not None else PROFILES.get(limits.name)
    if chip is not None:
        limits = profile.limits()
    try:
        source_model, shape, source, rename, widened = _source_model(model_or_checkpoint, input_shape)
        chip_model, info = chip_ready_model(source_model, input_shape=shape, allow_leak=allow_leak)
    except ChipConstraintError as err:
        if err.chip == limits.name:
            raise
        raise ChipConstraintError(err.violations, limits.name) from None  # name the chosen device
    if rename:
        info = replace(info, source_names=tuple(rename.get(n, n) for n in info.source_names))
    try:
        layers = validate(chip_model, shape, limits=limits)
    except ChipConstraintError as err:
        raise _with_source_names(err, info.source_names) from None
    output_pooling = _trailing_pooling(layers, limits)
    warnings: list[str] = []
    if info.leak_layers:
        from flexsnn.converters.chip_model import LEAK_WARNING

        warnings.append(f"layers {list(info.leak_layers)} keep biases: {LEAK_WARNING}")
    readout_cfg = None
    readout_note: Optional[str] = None
    num_classes = info.num_classes or layers[-1].output_shape[0]
    if widened is not None:  # flexsnn wrote this NIR graph with its output layer already widened
        num_classes, erratum = widened
        if profile is not None:
            profile.require("readout_classes", "the readout block the NIR graph was exported for")
        ok, why = readout_possible(num_classes, limits)
        if not ok:
            raise ChipConstraintError([Violation("readout (from the NIR graph)", "num_classes", num_classes,
                                                 f"<= {limits.readout_classes}", "export the source again "
                                                 "without --readout")], limits.name)
        readout_cfg = ReadoutConfig(num_classes=num_classes, channel_erratum=erratum)
        readout_note = "from the NIR graph (output layer already widened)"
    elif readout:
        erratum = True
        if profile is not None:
            profile.require("readout_classes", "the readout block (--readout)")
            erratum = bool(profile.require("readout_erratum", "the readout block (--readout)"))
        ok, why = readout_possible(num_classes, limits)
        if not ok:
            raise ChipConstraintError([Violation("readout", "num_classes", num_classes,
                                                 f"<= {limits.readout_classes}",
                                                 "export without the readout; the output core's events are "
                                                 "the class counts")], limits.name)
        if erratum:
            chip_model = widen_for_readout(chip_model, layers[-1].index, num_classes)
            layers = validate(chip_model, shape, limits=limits)
        else:
            why = f"class k on channel k-1 ({num_classes} channels)"
        readout_cfg = ReadoutConfig(num_classes=num_classes, channel_erratum=erratum)
        readout_note = why
    names = [f"layer {cl.index} (Conv2d, {info.source_names[cl.index]})" if info.source_names and
             cl.index < len(info.source_names) else cl.where for cl in layers]
    needs = [cl.memory() for cl in layers]
    cores = map_layers_to_cores(needs, names=names, core_order=core_order, limits=limits)
    discrete: list[DiscreteLayer] = []
    for cl, name in zip(layers, names):
        nrn = cl.neuron
        discrete.append(discretize_layer(cl.conv.weight, cl.conv.bias, float(nrn.spike_threshold),
                                         None if nrn.min_v_mem is None else float(nrn.min_v_mem),
                                         name=name, limits=limits))
    notes = {THRESHOLDS_NOTE: json.dumps([round(d.threshold_exact, 6) for d in discrete])}
    if output_pooling is not None:
        notes["output_pooling"] = str(output_pooling)
    image = build_chip_image(layers, discrete, cores, input_shape=shape, readout=readout_cfg,
                             source=source, names=[info.source_names[cl.index] if cl.index < len(info.source_names)
                                                   else f"layer{cl.index}" for cl in layers], limits=limits,
                             notes=notes)
    reports = tuple(
        LayerReport(cl.index, core, image.core(core).name, d.scale, d.n_weights, d.n_clipped, d.n_zeroed,
                    d.threshold_high, d.threshold_low, cl.memory(), d.threshold_exact)
        for cl, d, core in zip(layers, discrete, cores))
    for r, d, name in zip(reports, discrete, names):
        if d.zeroed_fraction > LOSS_WARN_FRACTION:
            warnings.append(f"layer {r.index}: discretization turned {d.n_zeroed} of {d.n_nonzero} "
                            "non-zero weights into 0")
        reach = reach_threshold_warning(d, name)
        if reach is not None:
            log.warning("%s", reach)
            warnings.append(reach)
    report = ExportReport(layers=reports, core_assignment=tuple(cores), readout=readout_note,
                          folded_bn=info.folded_bn, leak_layers=info.leak_layers, warnings=tuple(warnings),
                          extra={"chip_model": chip_model, "chip_layers": layers, "discrete": discrete,
                                 "source_names": info.source_names, "output_pooling": output_pooling})
    return image, report


def threshold_rounding(image: ChipImage) -> list[dict[str, Any]]:
    """Per core (image order): ``core``, ``name``, ``threshold_high``, ``exact`` (threshold ×
    scale before rounding) and ``error`` (relative); empty when the image does not record them
    (``notes["thresholds_exact"]``, written by :func:`export_chip_image`)."""
    try:
        exact = [float(v) for v in json.loads(image.notes.get(THRESHOLDS_NOTE, "[]"))]
    except (TypeError, ValueError):
        return []
    if len(exact) != len(image.cores):
        return []
    return [{"core": c.core, "name": c.name, "threshold_high": c.threshold_high, "exact": e,
             "error": (c.threshold_high - e) / e if e else float("nan")} for c, e in zip(image.cores, exact)]


def build_chip_image(
    layers: Sequence[ChipLayer],
    discrete: Sequence[DiscreteLayer],
    cores: Sequence[int],
    *,
    input_shape: tuple[int, int, int],
    readout: Optional[ReadoutConfig],
    source: str,
    names: Sequence[str],
    limits: ChipLimits = SPECK2E,
    notes: Optional[dict[str, str]] = None,
) -> ChipImage:
    """Assemble the :class:`ChipImage` of a validated, mapped, discretized chain of layers."""
    configs = []
    for i, (cl, d, core) in enumerate(zip(layers, discrete, cores)):
        dest: tuple[Destination, ...] = ()
        if i + 1 < len(layers):
            dest = (Destination(core=cores[i + 1], pooling=cl.pooling[0]),)
        reset = "subtract"
        import sinabs.activation as sa

        if isinstance(cl.neuron.reset_fn, sa.MembraneReset):
            reset = "zero"
        configs.append(CoreConfig(
            core=core, layer=cl.index, name=str(names[i]), input_shape=cl.input_shape,
            output_shape=cl.output_shape, kernel_size=int(cl.conv.kernel_size[0]),
            stride=tuple(int(v) for v in cl.conv.stride), padding=tuple(int(v) for v in cl.conv.padding),
            weights=d.weights, biases=d.biases, threshold_high=d.threshold_high, threshold_low=d.threshold_low,
            reset_mode=reset, leak_enabled=bool(np.any(d.biases != 0)), destinations=dest,
        ))
    c_in = input_shape[0]
    image = ChipImage(
        input=InputConfig(shape=input_shape, destinations=(cores[0],), pooling=1, merge_polarities=c_in == 1),
        cores=tuple(configs), output_core=cores[-1], readout=readout, chip=limits.name,
        layer_scales=tuple(d.scale for d in discrete), source=source, notes=dict(notes or {}),
    )
    return check_chip_image(image, limits=limits)
