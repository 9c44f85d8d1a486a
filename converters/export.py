"""Checkpoint or model -> chip-ready model -> validate -> map -> discretize -> :class:`ChipImage`.

:func:`export_chip_image` is the one entry point; each step is its own module
(:mod:`.chip_model`, :mod:`.validate`, :mod:`.mapping`, :mod:`.discretize`) and returns a new
object. Readout: Speck2e's readout block reads class k (1-based) from the output core's channel
``4(k-1)`` (erratum); with ``readout=True`` the output layer is widened so that class k's
weights sit on that channel (the other channels get zero weights and never fire); otherwise the
output core's events on channel k are the class counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
from flexsnn.converters.chip_model import ModelLike, chip_ready_model, load_source_model
from flexsnn.converters.discretize import LOSS_WARN_FRACTION, DiscreteLayer, discretize_layer
from flexsnn.converters.mapping import map_layers_to_cores
from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.converters.validate import ChipLayer, validate
from flexsnn.errors import ChipConstraintError, Violation

log = logging.getLogger(__name__)

DVS_INPUT_SHAPE = (2, 34, 34)


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
               f"{'thr_hi':>7} {'thr_lo':>7}"
        rows = [f"{r.index:>5} {r.core:>4} {r.name:<12} {r.scale:>10.4g} {r.n_weights:>8} {r.n_clipped:>8} "
                f"{r.n_zeroed:>7} {r.threshold_high:>7} {r.threshold_low:>7}" for r in self.layers]
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


def _chip_layers_and_model(model_or_checkpoint, input_shape, allow_leak):
    from flexsnn.models.checkpoint import check_finite

    model, source = load_source_model(model_or_checkpoint)
    check_finite(dict(model.state_dict()), source or "model")  # NaN/Inf refused by layer name
    chip, info = chip_ready_model(model, input_shape=input_shape, allow_leak=allow_leak)
    return chip, info, source


def export_chip_image(
    model_or_checkpoint: ModelLike,
    *,
    input_shape: Sequence[int] = DVS_INPUT_SHAPE,
    allow_leak: bool = False,
    core_order: Optional[Sequence[int]] = None,
    readout: bool = False,
    limits: ChipLimits = SPECK2E,
) -> tuple[ChipImage, ExportReport]:
    """Export a trained model (TFSNN, chip-ready or convertible ``nn.Sequential``, or checkpoint path).

    Args:
        model_or_checkpoint: the model or a ``.safetensors`` checkpoint path.
        input_shape: ``(C, H, W)`` of the DVS input (default N-MNIST ``(2, 34, 34)``).
        allow_leak: accept biases as a leak (a warning explains what the chip does with them).
        core_order: core id per chip layer (checked); default: found by bipartite matching.
        readout: use the readout block (only when possible; see module docstring).
        limits: the chip.

    Returns:
        ``(image, report)``; the image passes :func:`check_chip_image`.

    Raises:
        ChipConstraintError: every limit the model breaks, or an impossible mapping/readout.
    """
    shape = tuple(int(v) for v in input_shape)
    chip, info, source = _chip_layers_and_model(model_or_checkpoint, shape, allow_leak)
    layers = validate(chip, shape, limits=limits)
    warnings: list[str] = []
    if info.leak_layers:
        from flexsnn.converters.chip_model import LEAK_WARNING

        warnings.append(f"layers {list(info.leak_layers)} keep biases: {LEAK_WARNING}")
    readout_cfg = None
    readout_note: Optional[str] = None
    num_classes = info.num_classes or layers[-1].output_shape[0]
    if readout:
        ok, why = readout_possible(num_classes, limits)
        if not ok:
            raise ChipConstraintError([Violation("readout", "num_classes", num_classes,
                                                 f"<= {limits.readout_classes}",
                                                 "export without the readout; the output core's events are "
                                                 "the class counts")], limits.name)
        chip = widen_for_readout(chip, layers[-1].index, num_classes)
        layers = validate(chip, shape, limits=limits)
        readout_cfg = ReadoutConfig(num_classes=num_classes, channel_erratum=True)
        readout_note = why
    else:
        readout_note = None
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
    image = build_chip_image(layers, discrete, cores, input_shape=shape, readout=readout_cfg,
                             source=source, names=[info.source_names[cl.index] if cl.index < len(info.source_names)
                                                   else f"layer{cl.index}" for cl in layers], limits=limits)
    reports = tuple(
        LayerReport(cl.index, core, image.core(core).name, d.scale, d.n_weights, d.n_clipped, d.n_zeroed,
                    d.threshold_high, d.threshold_low, cl.memory())
        for cl, d, core in zip(layers, discrete, cores))
    for r, d in zip(reports, discrete):
        if d.zeroed_fraction > LOSS_WARN_FRACTION:
            warnings.append(f"layer {r.index}: discretization turned {d.n_zeroed} of {d.n_nonzero} "
                            "non-zero weights into 0")
    report = ExportReport(layers=reports, core_assignment=tuple(cores), readout=readout_note,
                          folded_bn=info.folded_bn, leak_layers=info.leak_layers, warnings=tuple(warnings),
                          extra={"chip_model": chip, "chip_layers": layers, "discrete": discrete})
    return image, report


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
        layer_scales=tuple(d.scale for d in discrete), source=source,
    )
    return check_chip_image(image, limits=limits)
