"""Speck2e devkit backend: runs a ChipImage on a connected devkit through samna.

samna is imported only when a :class:`Speck2eBackend` is created (through
:func:`flexsnn._optional.require`); without it the user gets one
:class:`~flexsnn.errors.BackendUnavailable` naming the ``hardware`` extra. The samna calls
are kept thin and follow sinabs' usage (``backend/dynapcnn/io.py``: ``get_device_map``,
``open_device``, ``close_device``, ``reset_timestamps``/``enable_timestamps``;
``dynapcnn_network.py``: ``DynapcnnNetwork.to`` and ``hw_forward``, ``reset_states``;
``config_builder.py``: ``set_all_v_mem_to_zeros``, ``validate_configuration``;
``chips/speck2e.py``: input/output buffer node classes). Everything computed around them lives
in :mod:`flexsnn.deploy.speck2e_protocol` and :mod:`flexsnn.converters.samna_config`.

Per sample (:meth:`Speck2eBackend.run`): zero every used neuron (``WriteNeuronValue`` events;
random initial states are a known cause of chip-vs-simulator gaps), flush the output buffer,
reset and start the devkit's stop watch, write the input as ``Spike`` events with timestamps
relative to the first event, wait for the sample's duration and then until the chip is quiet
(never longer than ``timeout_s``), stop the stop watch, decode output spikes and readout
events. The device is closed on every exit path (:meth:`close`, context manager, failures
while opening or configuring).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from flexsnn._optional import require
from flexsnn.converters.chip_image import ChipImage
from flexsnn.converters.samna_config import (
    SamnaConfigPlan,
    apply_plan,
    plan_samna_config,
    zero_neuron_states,
)
from flexsnn.deploy.backend import RunResult
from flexsnn.deploy.speck2e_protocol import (
    SAMNA_HINT,
    USB_HINT,
    DeviceDescriptor,
    class_counts,
    collect_until_quiet,
    core_neuron_addresses,
    decision_time_us,
    input_spike_fields,
    output_events,
    readout_votes,
    select_devkit,
    states_from_neuron_values,
)
from flexsnn.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speck2eOptions:
    """Settings of the devkit backend.

    Attributes:
        device_index: which Speck2e devkit (0-based, USB-address order) when ``serial`` is None.
        serial: open the devkit with this serial number.
        timeout_s: hard limit (s) on waiting for one sample's outputs beyond its duration.
        quiet_s: poll interval (s); the sample ends when a poll brings no new event.
        start_delay_us: offset (µs) added to input timestamps so the first one is not in the past.
        slow_clock_hz: slow-clock rate set when a leak or the readout is used (Hz).
        monitor: cores whose events are read: "output", "all", or a tuple of core ids.
        use_readout: configure the readout block when the image has one.
        reset: "write-zero" (write 0 to every used neuron, sinabs ``set_all_v_mem_to_zeros``)
            or "reapply" (re-apply the configuration with zero initial states, sinabs
            ``reset_states``; slow, about ``config_settle_s`` per sample).
        config_settle_s: wait (s) after applying a configuration (sinabs waits 1 s).
        validate: run ``samna.speck2e.validate_configuration`` before applying.
    """

    device_index: int | None = None
    serial: str | None = None
    timeout_s: float = 10.0
    quiet_s: float = 0.1
    start_delay_us: int = 2000
    slow_clock_hz: int = 1000
    monitor: Literal["output", "all"] | tuple[int, ...] = "output"
    use_readout: bool = True
    reset: Literal["write-zero", "reapply"] = "write-zero"
    config_settle_s: float = 1.0
    validate: bool = True

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s", self.timeout_s, "> 0 seconds")
        if self.quiet_s <= 0:
            raise ConfigError("quiet_s", self.quiet_s, "> 0 seconds")
        if self.start_delay_us < 0:
            raise ConfigError("start_delay_us", self.start_delay_us, ">= 0 µs")
        if self.slow_clock_hz <= 0:
            raise ConfigError("slow_clock_hz", self.slow_clock_hz, "> 0 Hz (10 Hz .. 10 kHz typical)")
        if self.reset not in ("write-zero", "reapply"):
            raise ConfigError("reset", self.reset, "'write-zero' or 'reapply'")
        if self.device_index is not None and self.device_index < 0:
            raise ConfigError("device_index", self.device_index, ">= 0")


def _samna() -> Any:
    return require("samna", backend="speck2e")


def _describe_info(info: Any) -> DeviceDescriptor:
    """A :class:`DeviceDescriptor` from a ``samna.device.DeviceInfo`` (fields read defensively:
    ``device_type_name``, ``serial_number``, ``usb_bus_number``, ``usb_device_address``)."""
    return DeviceDescriptor(
        type_name=str(getattr(info, "device_type_name", "")),
        serial=str(getattr(info, "serial_number", "") or ""),
        usb_bus=int(getattr(info, "usb_bus_number", -1)),
        usb_address=int(getattr(info, "usb_device_address", -1)),
        info=info,
    )


def _release(samna: Any, handle: Any, graphs: list) -> None:
    """Stop the event graph(s) and close the device (also run by the garbage-collection
    finalizer of a backend that was never closed)."""
    try:
        while graphs:
            graphs.pop().stop()
    finally:
        samna.device.close_device(handle)


def list_devkits() -> list[DeviceDescriptor]:
    """Every device samna sees (``samna.device.get_all_devices()``), Speck2e or not."""
    samna = _samna()
    try:
        return [_describe_info(i) for i in samna.device.get_all_devices()]
    except (RuntimeError, OSError) as err:
        raise BackendUnavailable("speck2e", f"samna could not list USB devices ({err})",
                                 f"{USB_HINT}; {SAMNA_HINT}") from err


def devkit_status() -> tuple[bool, str]:
    """(usable, reason): is samna importable and a Speck2e devkit connected? Never raises."""
    from flexsnn._optional import samna_status

    ok, reason = samna_status()
    if not ok:
        return False, reason
    try:
        dev = select_devkit(list_devkits())
    except BackendUnavailable as err:
        return False, str(err)
    return True, f"found {dev.describe()}"


class Speck2eBackend:
    """A Speck2e devkit behind the :class:`~flexsnn.deploy.backend.Backend` protocol.

    Use as a context manager so the device is always closed::

        with Speck2eBackend(image, timeout_s=5) as chip:
            result = chip.run(events)
    """

    name = "speck2e"
    deterministic = False  # cores 0 and 1 run in parallel on the chip
    real_time = True  # a sample takes its own duration

    def __init__(self, image: ChipImage | None = None, *, options: Speck2eOptions | None = None,
                 **overrides: Any) -> None:
        self.options = options or Speck2eOptions()
        if overrides:
            from dataclasses import replace

            unknown = set(overrides) - set(Speck2eOptions.__dataclass_fields__)
            if unknown:
                raise ConfigError("speck2e option", sorted(unknown),
                                  f"one of {sorted(Speck2eOptions.__dataclass_fields__)}")
            self.options = replace(self.options, **overrides)
        self._samna = _samna()
        self._device: Any = None
        self._descriptor: DeviceDescriptor | None = None
        self._graph: Any = None
        self._graphs: list = []
        self._finalizer: weakref.finalize | None = None
        self._input_buffer: Any = None
        self._output_buffer: Any = None
        self._config: Any = None
        self.image: ChipImage | None = None
        self.plan: SamnaConfigPlan | None = None
        self._reset_addresses: dict[int, np.ndarray] = {}
        if image is not None:
            self.load(image)

    # ---- device lifetime -------------------------------------------------------------------
    @property
    def device(self) -> DeviceDescriptor | None:
        """The opened devkit, or None."""
        return self._descriptor

    def open(self) -> DeviceDescriptor:
        """Find and open the devkit chosen by ``device_index``/``serial`` (idempotent)."""
        if self._device is not None:
            return self._descriptor  # type: ignore[return-value]
        chosen = select_devkit(list_devkits(), index=self.options.device_index, serial=self.options.serial)
        try:
            handle = self._samna.device.open_device(chosen.info)
        except (RuntimeError, OSError) as err:
            raise BackendUnavailable("speck2e", f"could not open {chosen.describe()} ({err})",
                                     f"{USB_HINT}; {SAMNA_HINT}") from err
        if handle is None:
            raise BackendUnavailable("speck2e", f"samna returned no handle for {chosen.describe()}",
                                     USB_HINT)
        self._device, self._descriptor = handle, chosen
        self._graphs: list = []
        # closes the device even if the backend is dropped without close() (or the process exits)
        self._finalizer = weakref.finalize(self, _release, self._samna, handle, self._graphs)
        log.info("opened %s", chosen.describe())
        return chosen

    def close(self) -> None:
        """Stop the event graph and close the device; safe to call twice."""
        device, finalizer = self._device, self._finalizer
        self._graph = self._input_buffer = self._output_buffer = None
        self._device = None
        if device is not None and finalizer is not None and finalizer.alive:
            finalizer()  # runs _release once
            log.info("closed %s", self._descriptor.describe() if self._descriptor else "devkit")

    def __enter__(self) -> "Speck2eBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- configuration ---------------------------------------------------------------------
    def load(self, image: ChipImage) -> None:
        """Plan, validate and apply ``image``'s configuration; set the slow clock when needed;
        connect the input and output buffers. Closes the device if any step fails."""
        plan = plan_samna_config(image, monitor=self.options.monitor, use_readout=self.options.use_readout)
        config = apply_plan(plan, self._samna.speck2e.configuration.SpeckConfiguration())
        if self.options.validate:
            result = self._samna.speck2e.validate_configuration(config)
            ok, message = (result[0], result[1]) if isinstance(result, tuple) else (result, "")
            if not ok:
                raise BackendUnavailable(
                    "speck2e", f"samna rejects the configuration of {image.source or 'the chip image'}: "
                    f"{message}", f"check the image with `flexsnn validate`; {SAMNA_HINT}")
        self.open()
        try:
            self._apply(config)
            if plan.slow_clock_required:
                io = self._device.get_io_module()
                io.set_slow_clk_rate(int(self.options.slow_clock_hz))  # Hz
                io.set_slow_clk(True)
            self._connect()
        except (RuntimeError, OSError, TypeError) as err:
            desc = self._descriptor.describe() if self._descriptor else "the devkit"
            self.close()
            raise BackendUnavailable("speck2e", f"configuring {desc} failed ({err})",
                                     f"{USB_HINT}; {SAMNA_HINT}") from err
        except BaseException:
            self.close()
            raise
        self.image, self.plan, self._config = image, plan, config
        self._reset_addresses = self._plan_reset(image)

    def _apply(self, config: Any) -> None:
        self._device.get_model().apply_configuration(config)
        time.sleep(self.options.config_settle_s)

    def _connect(self) -> None:
        while self._graphs:
            self._graphs.pop().stop()
        samna = self._samna
        self._input_buffer = samna.BasicSourceNode_speck2e_event_speck2e_input_event()
        self._output_buffer = samna.BasicSinkNode_speck2e_event_output_event()
        model = self._device.get_model()
        graph = samna.graph.EventFilterGraph()
        graph.sequential([self._input_buffer, model.get_sink_node()])
        graph.sequential([model.get_source_node(), self._output_buffer])
        graph.start()
        self._graph = graph
        self._graphs.append(graph)

    def _plan_reset(self, image: ChipImage) -> dict[int, np.ndarray]:
        if self.options.reset == "reapply":
            return {}
        addresses = {}
        for core in image.cores:
            try:
                addresses[core.core] = core_neuron_addresses(tuple(core.output_shape))
            except ConfigError:
                log.info("core %d: neuron addresses ambiguous for %s; reset re-applies the configuration",
                         core.core, core.output_shape)
                return {}
        return addresses

    # ---- running -------------------------------------------------------------------------
    def _require_loaded(self) -> None:
        if self.image is None or self._device is None:
            raise ConfigError("speck2e backend", "not loaded", "call load(image) first",
                              "the device may have been closed")

    def reset(self) -> None:
        """Zero every used neuron (before each sample)."""
        self._require_loaded()
        if not self._reset_addresses:
            zero_neuron_states(self.plan, self._config)
            self._apply(self._config)
            return
        event_cls = self._samna.speck2e.event.WriteNeuronValue
        writes = []
        for core, addresses in self._reset_addresses.items():
            for a in addresses.tolist():
                ev = event_cls()
                ev.layer, ev.address, ev.neuron_state = core, a, 0
                writes.append(ev)
        self._input_buffer.write(writes)

    def neuron_states(self, cores: tuple[int, ...] | None = None) -> dict[int, np.ndarray]:
        """Read every neuron of ``cores`` (default all used) back from the chip.

        Writes ``ReadNeuronValue`` events and decodes the ``NeuronValue`` replies (``address``,
        ``neuron_state``; as sinabs' ``calculate_neuron_address`` / ``neuron_address_to_cxy``
        examples). Returns core id -> int64 ``[C, H, W]`` (as
        :meth:`AsyncSimulator.neuron_states`).

        Raises:
            BackendUnavailable: some neurons did not reply within ``timeout_s``.
            ConfigError: a core's map has no unambiguous neuron address (non-square).
        """
        self._require_loaded()
        image, samna = self.image, self._samna
        cores = tuple(cores) if cores is not None else tuple(c.core for c in image.cores)
        read_cls = samna.speck2e.event.ReadNeuronValue
        requests, shapes = [], {}
        for core in cores:
            shapes[core] = tuple(image.core(core).output_shape)
            for a in core_neuron_addresses(shapes[core]).tolist():
                ev = read_cls()
                ev.layer, ev.address = core, a
                requests.append(ev)
        self._output_buffer.get_events()  # flush
        self._input_buffer.write(requests)
        got = collect_until_quiet(self._output_buffer.get_events, min_wait_s=self.options.quiet_s,
                                  quiet_s=self.options.quiet_s, timeout_s=self.options.timeout_s)
        replies = [e for e in got.items if hasattr(e, "neuron_state") and hasattr(e, "address")]
        out = {}
        for core in cores:
            mine = [e for e in replies if int(e.layer) == core]
            states, seen = states_from_neuron_values([e.address for e in mine], [e.neuron_state for e in mine],
                                                     shapes[core])
            if not seen.all():
                raise BackendUnavailable(
                    "speck2e", f"core {core}: {int((~seen).sum())} of {seen.size} neurons did not answer "
                    f"ReadNeuronValue within {self.options.timeout_s} s", f"raise timeout_s; {USB_HINT}")
            out[core] = states
        return out

    def run(self, events: np.ndarray) -> RunResult:
        """Reset, replay ``events`` in real time, collect outputs (bounded by ``timeout_s``)."""
        self._require_loaded()
        image, opts = self.image, self.options
        fields = input_spike_fields(events, image, start_delay_us=opts.start_delay_us)
        self.reset()
        spike_cls = self._samna.speck2e.event.Spike
        spikes = []
        for row in fields.tolist():
            ev = spike_cls()
            ev.layer, ev.x, ev.y, ev.feature, ev.timestamp = row
            spikes.append(ev)
        self._output_buffer.get_events()  # flush
        watch = self._device.get_stop_watch()
        watch.reset()
        watch.start()
        t_wall = time.perf_counter()
        try:
            self._input_buffer.write(spikes)
            duration_us = int(events["t"][-1] - events["t"][0]) if events.size else 0
            got = collect_until_quiet(self._output_buffer.get_events,
                                      min_wait_s=(duration_us + opts.start_delay_us) * 1e-6,
                                      quiet_s=opts.quiet_s, timeout_s=opts.timeout_s + duration_us * 1e-6)
        finally:
            watch.stop()
        wall_s = time.perf_counter() - t_wall
        if got.timed_out:
            log.warning("devkit still emitting after %.1f s; stopped waiting (raise timeout_s if "
                        "outputs are cut off; a chip that never goes quiet may be stalled: power-cycle it)",
                        got.waited_s)
        return self._result(events, got.items, got.timed_out, wall_s, duration_us)

    def _result(self, events: np.ndarray, items: list, timed_out: bool, wall_s: float,
                duration_us: int) -> RunResult:
        image, samna = self.image, self._samna
        spike_cls = samna.speck2e.event.Spike
        pin_cls = getattr(samna.speck2e.event, "ReadoutPinValue", None)
        spikes = [e for e in items if isinstance(e, spike_cls)]
        pins = [e for e in items if pin_cls is not None and isinstance(e, pin_cls)]
        t0 = int(events["t"][0]) if events.size else 0
        out = output_events([e.layer for e in spikes], [e.x for e in spikes], [e.y for e in spikes],
                            [e.feature for e in spikes], [e.timestamp for e in spikes],
                            cores=self.plan.monitored_cores, t0_us=t0,
                            start_delay_us=self.options.start_delay_us)
        counts = {c: int(np.count_nonzero(out["core"] == c)) for c in self.plan.monitored_cores}
        extras: dict[str, object] = {"t0_us": t0, "timed_out": timed_out, "wall_s": wall_s,
                                     "decision_time_us": decision_time_us(out, image),
                                     "device": self._descriptor.describe() if self._descriptor else ""}
        if image.readout is not None and self.plan.readout is not None:
            extras["readout_votes"] = readout_votes([p.index for p in pins], image.readout)
        return RunResult(events=out, spike_counts=counts, synops={}, class_counts=class_counts(out, image),
                         input_events=int(events.size), duration_us=duration_us, extras=extras)

    def predict(self, events: np.ndarray) -> int:
        """Class predicted for one sample (``run(events).prediction``)."""
        return self.run(events).prediction
