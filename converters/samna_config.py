"""ChipImage -> samna Speck2e configuration.

Two steps, so that the field mapping is tested where samna is absent:

1. :func:`plan_samna_config` maps a :class:`~flexsnn.converters.chip_image.ChipImage` onto a
   :class:`SamnaConfigPlan`: plain frozen dataclasses holding exactly the values that go into
   ``samna.speck2e.configuration.SpeckConfiguration`` (NumPy and builtins only).
   :meth:`SamnaConfigPlan.to_dict` gives a JSON-able view that tests compare with recorded
   expectations.
2. :func:`apply_plan` writes a plan onto a samna configuration object with plain attribute
   assignments; :func:`build_samna_config` creates the ``SpeckConfiguration`` (samna imported
   lazily through :func:`flexsnn._optional.require`) and applies the plan.

The field mapping follows sinabs' ``DynapcnnConfigBuilder.get_dynapcnn_layer_config_dict`` /
``write_dynapcnn_layer_config`` / ``build_config`` (``chips/dynapcnn.py``) and its
``monitor_layers`` and ``reset_states``; the readout follows the Speck devkit datasheet and
SynSense's "using the readout layer" example (destination layer 12, ``readout_configuration_sel``
3 = 1x1x16f, Speck2e channel erratum). Fields:

- per used core ``cnn_layers[core]``: ``dimensions`` (``input_shape.size.{x,y}``,
  ``input_shape.feature_count``, ``output_shape`` likewise, ``padding.{x,y}``, ``stride.{x,y}``,
  ``kernel_size``), ``weights`` ``[c_out][c_in][kw][kh]`` (the kernel transposed to samna's
  x-first convention), ``biases``, ``leak_enable``, ``threshold_high``, ``threshold_low``,
  ``return_to_zero``, ``monitor_enable``, ``neurons_initial_value`` (zeros ``[c][w][h]``),
  ``destinations[i].{layer, enable, pooling}``;
- ``dvs_layer.pass_sensor_events = False`` (input events are written by the host directly to
  the input cores, as sinabs does for ``dvs_input=False``), ``dvs_layer.monitor_enable``;
- ``readout``: ``enable``, ``readout_configuration_sel``, ``output_mode_sel``,
  ``low_pass_filter_disable``, ``threshold``, ``monitor_enable``, ``readout_pin_monitor_enable``
  (the output core then also sends its events to layer 12).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from flexsnn.converters.chip_image import ChipImage, check_chip_image
from flexsnn.errors import ChipConstraintError, ConfigError, Violation

log = logging.getLogger(__name__)

#: Layer id of the readout block (a core destination).
READOUT_LAYER = 12
#: ``readout_configuration_sel`` 3: the readout reads a 1x1 map with up to 16 features.
READOUT_SEL_1X1X16F = 3
#: Highest output-core channel count the readout can sit on: its 16 neurons read core channels
#: 0, 4, .., 60 on Speck2e (erratum), so the output core has at most 64 channels.
READOUT_MAX_CHANNELS = 64
#: ``output_mode_sel`` 3: ReadoutValue payload = maximum moving average.
READOUT_OUTPUT_MODE_MAX_AVERAGE = 3

Monitor = Literal["output", "all"] | Sequence[int]


@dataclass(frozen=True)
class DestinationPlan:
    """``cnn_layers[core].destinations[i]``: target ``layer`` (core id, or 12 = readout)."""

    layer: int
    enable: bool = True
    pooling: int = 1


@dataclass(frozen=True, eq=False)
class CnnLayerPlan:
    """Values of ``cnn_layers[core]``.

    ``weights`` is int8 ``[c_out, c_in, kw, kh]`` (samna's x-first kernel layout);
    ``neuron_shape`` is ``(C, W, H)``, the layout of ``neurons_initial_value``.
    """

    core: int
    dimensions: dict
    weights: np.ndarray
    biases: tuple[int, ...]
    leak_enable: bool
    threshold_high: int
    threshold_low: int
    return_to_zero: bool
    monitor_enable: bool
    neuron_shape: tuple[int, int, int]
    destinations: tuple[DestinationPlan, ...]

    def neurons_initial_value(self) -> list:
        """Zero initial states, nested ``[c][x][y]`` (flexsnn resets to zero, never at random)."""
        return np.zeros(self.neuron_shape, dtype=np.int64).tolist()


@dataclass(frozen=True)
class ReadoutPlan:
    """Values of ``readout`` (see the module docstring)."""

    enable: bool = True
    readout_configuration_sel: int = READOUT_SEL_1X1X16F
    output_mode_sel: int = READOUT_OUTPUT_MODE_MAX_AVERAGE
    low_pass_filter_disable: bool = True
    threshold: int = 1
    monitor_enable: bool = False
    readout_pin_monitor_enable: bool = True


@dataclass(frozen=True, eq=False)
class SamnaConfigPlan:
    """Everything written into a ``SpeckConfiguration`` for one ChipImage, plus what the
    backend needs to drive it.

    Attributes:
        cnn_layers: one :class:`CnnLayerPlan` per used core, in the image's core order.
        dvs_pass_sensor_events, dvs_monitor_enable: ``dvs_layer`` fields.
        readout: the readout block, or ``None`` when unused.
        monitored_cores: cores whose output events the host receives.
        input_cores: cores the host writes input ``Spike`` events to.
        slow_clock_required: a leak or the readout needs the devkit's slow clock.
        warnings: chip quirks that apply to this image (logged when planned).
    """

    chip: str
    cnn_layers: tuple[CnnLayerPlan, ...]
    dvs_pass_sensor_events: bool
    dvs_monitor_enable: bool
    readout: ReadoutPlan | None
    monitored_cores: tuple[int, ...]
    input_cores: tuple[int, ...]
    slow_clock_required: bool
    warnings: tuple[str, ...] = field(default=())

    def layer(self, core: int) -> CnnLayerPlan:
        for lp in self.cnn_layers:
            if lp.core == core:
                return lp
        raise KeyError(f"core {core} is not configured; configured: {[lp.core for lp in self.cnn_layers]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (weights as nested lists ``[c_out][c_in][kw][kh]``)."""
        return {
            "chip": self.chip,
            "dvs_layer": {"pass_sensor_events": self.dvs_pass_sensor_events,
                          "monitor_enable": self.dvs_monitor_enable},
            "cnn_layers": {
                str(lp.core): {
                    "dimensions": lp.dimensions,
                    "weights": lp.weights.tolist(),
                    "biases": list(lp.biases),
                    "leak_enable": lp.leak_enable,
                    "threshold_high": lp.threshold_high,
                    "threshold_low": lp.threshold_low,
                    "return_to_zero": lp.return_to_zero,
                    "monitor_enable": lp.monitor_enable,
                    "neurons_initial_value_shape": list(lp.neuron_shape),
                    "destinations": [{"layer": d.layer, "enable": d.enable, "pooling": d.pooling}
                                     for d in lp.destinations],
                } for lp in self.cnn_layers
            },
            "readout": None if self.readout is None else dict(vars(self.readout)),
            "monitored_cores": list(self.monitored_cores),
            "input_cores": list(self.input_cores),
            "slow_clock_required": self.slow_clock_required,
            "warnings": list(self.warnings),
        }


def _dimensions(core) -> dict:
    """sinabs' ``dimensions`` dict of one core (sizes as x = width, y = height)."""
    c_in, h_in, w_in = core.input_shape
    c_out, h_out, w_out = core.output_shape
    return {
        "input_shape": {"size": {"x": int(w_in), "y": int(h_in)}, "feature_count": int(c_in)},
        "output_shape": {"size": {"x": int(w_out), "y": int(h_out)}, "feature_count": int(c_out)},
        "padding": {"x": int(core.padding[1]), "y": int(core.padding[0])},
        "stride": {"x": int(core.stride[1]), "y": int(core.stride[0])},
        "kernel_size": int(core.kernel_size),
    }


def _monitored(image: ChipImage, monitor: Monitor) -> tuple[int, ...]:
    used = [c.core for c in image.cores]
    if monitor == "output":
        return (image.output_core,)
    if monitor == "all":
        return tuple(image.core_order())
    cores = tuple(int(c) for c in monitor)
    bad = [c for c in cores if c not in used]
    if bad:
        raise ConfigError("monitor", cores, f"used cores {used}", "monitor only cores the image uses")
    return cores


def plan_samna_config(image: ChipImage, *, monitor: Monitor = "output", use_readout: bool = True,
                      readout_threshold: int = 1) -> SamnaConfigPlan:
    """Map ``image`` onto the samna Speck2e configuration fields (no samna needed).

    Args:
        image: a checked ChipImage (checked again here).
        monitor: ``"output"`` (the output core), ``"all"`` used cores, or a list of core ids.
        use_readout: configure the readout block when the image has a readout.
        readout_threshold: ``readout.threshold`` (spikes per slow-clock period).

    Raises:
        ChipConstraintError: the image breaks a chip limit, or its readout cannot run on the
            Speck2e readout block (output map not 1x1, more than 16 channels, no erratum
            mapping, no free destination on the output core).
    """
    check_chip_image(image)
    if image.chip != "speck2e":
        raise ConfigError("chip", image.chip, "'speck2e'", "export the checkpoint for Speck2e")
    monitored = _monitored(image, monitor)
    readout = None
    warnings: list[str] = []
    if image.readout is not None and use_readout:
        out = image.core(image.output_core)
        problems = []
        if tuple(out.output_shape[1:]) != (1, 1):
            problems.append(Violation("readout", "output map", out.output_shape[1:], "1x1",
                                      "end the network with a 1x1 map (Linear) or disable the readout"))
        if out.output_shape[0] > READOUT_MAX_CHANNELS:
            problems.append(Violation("readout", "output channels", out.output_shape[0], f"<= {READOUT_MAX_CHANNELS}",
                                      "the readout's 16 neurons read channels 0, 4, .., 60 on Speck2e; "
                                      "drop the unused output channels"))
        if not image.readout.channel_erratum:
            problems.append(Violation("readout", "channel_erratum", False, "True on Speck2e",
                                      "re-export with the erratum: readout neuron k reads core channel 4*(k-1)"))
        if len(out.destinations) >= 2:
            problems.append(Violation("readout", "output core destinations", len(out.destinations),
                                      "<= 1 (the readout needs one)", "remove a branch from the output core"))
        if readout_threshold < 0:
            raise ConfigError("readout_threshold", readout_threshold, ">= 0")
        if problems:
            raise ChipConstraintError(problems, chip="speck2e readout")
        readout = ReadoutPlan(threshold=int(readout_threshold))
    layers = []
    order = image.core_order()
    for core in sorted(image.cores, key=lambda c: order.index(c.core) if c.core in order else 99 + c.core):
        dests = [DestinationPlan(d.core, True, d.pooling) for d in core.destinations]
        if readout is not None and core.core == image.output_core:
            dests.append(DestinationPlan(READOUT_LAYER, True, 1))
        if core.threshold_low == 0:
            warnings.append(f"core {core.core}: threshold_low = 0 hits a known Speck bug "
                            "(datasheet: use -1 instead)")
        c_out, h, w = core.output_shape
        layers.append(CnnLayerPlan(
            core=core.core,
            dimensions=_dimensions(core),
            weights=np.ascontiguousarray(np.swapaxes(core.weights, 2, 3)).astype(np.int8),
            biases=tuple(int(b) for b in core.biases),
            leak_enable=bool(core.leak_enabled),
            threshold_high=int(core.threshold_high),
            threshold_low=int(core.threshold_low),
            return_to_zero=core.reset_mode == "zero",
            monitor_enable=core.core in monitored,
            neuron_shape=(int(c_out), int(w), int(h)),
            destinations=tuple(dests),
        ))
    for w_ in warnings:
        log.warning(w_)
    return SamnaConfigPlan(
        chip="speck2e",
        cnn_layers=tuple(layers),
        dvs_pass_sensor_events=False,
        dvs_monitor_enable=False,
        readout=readout,
        monitored_cores=monitored,
        input_cores=tuple(image.input.destinations),
        slow_clock_required=readout is not None or any(c.leak_enabled for c in image.cores),
        warnings=tuple(warnings),
    )


def apply_plan(plan: SamnaConfigPlan, config: Any) -> Any:
    """Write ``plan`` onto a samna ``SpeckConfiguration`` (modified in place and returned).

    Assignments as sinabs' ``write_dynapcnn_layer_config``: ``dimensions`` as a dict,
    destinations field by field, every other field with ``setattr``. A field samna rejects
    raises ``TypeError`` naming the core and field.
    """
    config.dvs_layer.pass_sensor_events = plan.dvs_pass_sensor_events
    config.dvs_layer.monitor_enable = plan.dvs_monitor_enable
    for lp in plan.cnn_layers:
        chip_layer = config.cnn_layers[lp.core]
        chip_layer.dimensions = {k: (dict(v) if isinstance(v, dict) else v) for k, v in lp.dimensions.items()}
        for i, d in enumerate(lp.destinations):
            chip_layer.destinations[i].layer = d.layer
            chip_layer.destinations[i].enable = d.enable
            chip_layer.destinations[i].pooling = d.pooling
        values = {
            "weights": lp.weights.astype(np.int64).tolist(),
            "biases": list(lp.biases),
            "leak_enable": lp.leak_enable,
            "threshold_high": lp.threshold_high,
            "threshold_low": lp.threshold_low,
            "return_to_zero": lp.return_to_zero,
            "monitor_enable": lp.monitor_enable,
            "neurons_initial_value": lp.neurons_initial_value(),
        }
        for name, value in values.items():
            try:
                setattr(chip_layer, name, value)
            except TypeError as err:
                raise TypeError(f"samna rejected cnn_layers[{lp.core}].{name}: {err}") from err
    if plan.readout is not None:
        for name, value in vars(plan.readout).items():
            try:
                setattr(config.readout, name, value)
            except TypeError as err:
                raise TypeError(f"samna rejected readout.{name}: {err}") from err
    return config


def zero_neuron_states(plan: SamnaConfigPlan, config: Any) -> Any:
    """Set ``neurons_initial_value`` of every planned core to zeros (sinabs ``reset_states``)."""
    for lp in plan.cnn_layers:
        config.cnn_layers[lp.core].neurons_initial_value = lp.neurons_initial_value()
    return config


def build_samna_config(image: ChipImage, **options: Any) -> tuple[Any, SamnaConfigPlan]:
    """A real ``samna.speck2e.configuration.SpeckConfiguration`` for ``image`` and its plan.

    ``options`` are those of :func:`plan_samna_config`. Needs samna (raises
    :class:`~flexsnn.errors.BackendUnavailable` naming the ``hardware`` extra without it).
    """
    from flexsnn._optional import require

    plan = plan_samna_config(image, **options)
    samna = require("samna", backend="speck2e")
    config = samna.speck2e.configuration.SpeckConfiguration()
    return apply_plan(plan, config), plan


def validate_samna_config(config: Any) -> tuple[bool, str]:
    """samna's own check, ``samna.speck2e.validate_configuration(config)`` -> (valid, message)
    (as sinabs' ``ConfigBuilder.validate_configuration``)."""
    from flexsnn._optional import require

    samna = require("samna", backend="speck2e")
    result = samna.speck2e.validate_configuration(config)
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1]) if len(result) > 1 else ""
    return bool(result), ""
