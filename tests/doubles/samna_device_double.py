"""TEST DOUBLE of the parts of samna's public API that flexsnn's Speck2e backend calls.

samna cannot be installed here, so the backend's thin samna layer (device discovery, open and
close, configuration upload, event graph, stop watch, slow clock) is exercised against this
double. It is used only in tests, never by library code, and it does not simulate the chip:
its "chip" is a ``responder`` callable chosen by each test, which turns the input ``Spike``
events written to the device into output events.

Configuration objects use ``__slots__`` with the field names samna documents (and sinabs
writes), so a misspelt field in :func:`flexsnn.converters.samna_config.apply_plan` fails here
as it would on samna.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable


# ---- configuration ---------------------------------------------------------------------------
class DestinationConfigDouble:
    __slots__ = ("layer", "enable", "pooling", "feature_shift")

    def __init__(self) -> None:
        self.layer, self.enable, self.pooling, self.feature_shift = 0, False, 1, 0


class CNNLayerConfigDouble:
    __slots__ = ("dimensions", "weights", "biases", "leak_enable", "leak_internal_slow_clk_enable",
                 "threshold_high", "threshold_low", "return_to_zero", "monitor_enable",
                 "neurons_initial_value", "destinations")

    def __init__(self) -> None:
        self.dimensions, self.weights, self.biases = None, [], []
        self.leak_enable = self.leak_internal_slow_clk_enable = False
        self.threshold_high, self.threshold_low = 0, 0
        self.return_to_zero = self.monitor_enable = False
        self.neurons_initial_value = []
        self.destinations = [DestinationConfigDouble(), DestinationConfigDouble()]


class DVSLayerConfigDouble:
    __slots__ = ("pass_sensor_events", "monitor_enable", "merge", "pooling", "destinations")

    def __init__(self) -> None:
        self.pass_sensor_events, self.monitor_enable, self.merge = True, False, False
        self.pooling = {"x": 1, "y": 1}
        self.destinations = [DestinationConfigDouble(), DestinationConfigDouble()]


class ReadoutConfigDouble:
    __slots__ = ("enable", "internal_slow_clk", "low_pass_filter32_not16", "low_pass_filter_disable",
                 "monitor_enable", "output_mode_sel", "output_neuron_num", "override_threshold_max",
                 "readout_configuration_sel", "readout_pin_monitor_enable", "threshold")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class SpeckConfigurationDouble:
    __slots__ = ("cnn_layers", "dvs_layer", "readout")

    def __init__(self) -> None:
        self.cnn_layers = [CNNLayerConfigDouble() for _ in range(9)]
        self.dvs_layer = DVSLayerConfigDouble()
        self.readout = ReadoutConfigDouble()


# ---- events ------------------------------------------------------------------------------
class SpikeDouble:
    __slots__ = ("layer", "x", "y", "feature", "timestamp")

    def __init__(self, layer: int = 0, x: int = 0, y: int = 0, feature: int = 0, timestamp: int = 0) -> None:
        self.layer, self.x, self.y, self.feature, self.timestamp = layer, x, y, feature, timestamp


class WriteNeuronValueDouble:
    __slots__ = ("layer", "address", "neuron_state")

    def __init__(self) -> None:
        self.layer, self.address, self.neuron_state = 0, 0, 0


class ReadNeuronValueDouble:
    __slots__ = ("layer", "address")

    def __init__(self) -> None:
        self.layer, self.address = 0, 0


class NeuronValueDouble:
    __slots__ = ("layer", "address", "neuron_state")

    def __init__(self, layer: int = 0, address: int = 0, neuron_state: int = 0) -> None:
        self.layer, self.address, self.neuron_state = layer, address, neuron_state


class ReadoutPinValueDouble:
    __slots__ = ("index", "timestamp")

    def __init__(self, index: int = 0, timestamp: int = 0) -> None:
        self.index, self.timestamp = index, timestamp


# ---- devices and graph -------------------------------------------------------------------
class DeviceInfoDouble:
    def __init__(self, device_type_name: str, serial_number: str = "", usb_bus_number: int = 1,
                 usb_device_address: int = 1) -> None:
        self.device_type_name, self.serial_number = device_type_name, serial_number
        self.usb_bus_number, self.usb_device_address = usb_bus_number, usb_device_address


class StopWatchDouble:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def reset(self) -> None:
        self.calls.append("reset")

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


class IOModuleDouble:
    def __init__(self) -> None:
        self.slow_clk: bool | None = None
        self.slow_clk_rate: int | None = None

    def set_slow_clk(self, on: bool) -> None:
        self.slow_clk = on

    def set_slow_clk_rate(self, hz: int) -> None:
        self.slow_clk_rate = hz


class _ModelSinkDouble:
    def __init__(self, devkit: "DevkitDouble") -> None:
        self.devkit = devkit


class _ModelSourceDouble:
    def __init__(self, devkit: "DevkitDouble") -> None:
        self.devkit = devkit


class ModelDouble:
    def __init__(self, devkit: "DevkitDouble") -> None:
        self.devkit = devkit
        self.applied: list[SpeckConfigurationDouble] = []
        self._sink, self._source = _ModelSinkDouble(devkit), _ModelSourceDouble(devkit)
        self.fail_apply: Exception | None = None

    def apply_configuration(self, config: SpeckConfigurationDouble) -> None:
        if self.fail_apply is not None:
            raise self.fail_apply
        self.applied.append(config)

    def get_sink_node(self) -> _ModelSinkDouble:
        return self._sink

    def get_source_node(self) -> _ModelSourceDouble:
        return self._source


class DevkitDouble:
    """An opened board. ``written`` logs every input event batch; ``responder(spikes)`` returns
    the output events for a batch of input ``SpikeDouble``; ``chatter`` makes the board emit
    one more event at every poll (a chip that never goes quiet)."""

    def __init__(self, info: DeviceInfoDouble, responder: Callable[[list], list] | None = None) -> None:
        self.info = info
        self.model = ModelDouble(self)
        self.stop_watch = StopWatchDouble()
        self.io = IOModuleDouble()
        self.responder = responder or (lambda spikes: [])
        self.written: list[list] = []
        #: neuron memory: (layer, address) -> state; unwritten neurons hold a non-zero junk
        #: value (random initial states are what the reset must remove).
        self.neurons: dict[tuple[int, int], int] = {}
        self.junk_state = 17
        self.pending: list = []
        self.chatter = False
        self.closed = False

    def get_model(self) -> ModelDouble:
        return self.model

    def get_stop_watch(self) -> StopWatchDouble:
        return self.stop_watch

    def get_io_module(self) -> IOModuleDouble:
        return self.io

    def receive(self, events: list) -> None:
        self.written.append(list(events))
        for e in events:
            if isinstance(e, WriteNeuronValueDouble):
                self.neurons[(e.layer, e.address)] = e.neuron_state
            elif isinstance(e, ReadNeuronValueDouble):
                state = self.neurons.get((e.layer, e.address), self.junk_state)
                self.pending.append(NeuronValueDouble(e.layer, e.address, state))
        spikes = [e for e in events if isinstance(e, SpikeDouble)]
        if spikes:
            self.pending.extend(self.responder(spikes))


class BasicSourceNodeDouble:
    def __init__(self) -> None:
        self.targets: list[DevkitDouble] = []

    def write(self, events: list) -> None:
        for devkit in self.targets:
            devkit.receive(events)


class BasicSinkNodeDouble:
    def __init__(self) -> None:
        self.sources: list[DevkitDouble] = []

    def get_events(self) -> list:
        out = []
        for devkit in self.sources:
            out.extend(devkit.pending)
            devkit.pending = []
            if devkit.chatter:
                out.append(SpikeDouble(layer=99))
        return out


class EventFilterGraphDouble:
    def __init__(self) -> None:
        self.running = False
        self.stopped = 0

    def sequential(self, nodes: list) -> list:
        a, b = nodes
        if isinstance(a, BasicSourceNodeDouble) and isinstance(b, _ModelSinkDouble):
            a.targets.append(b.devkit)
        elif isinstance(a, _ModelSourceDouble) and isinstance(b, BasicSinkNodeDouble):
            b.sources.append(a.devkit)
        else:
            raise TypeError(f"test double cannot connect {type(a).__name__} -> {type(b).__name__}")
        return nodes

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False
        self.stopped += 1


def make_samna_double(infos: list[DeviceInfoDouble] | None = None,
                      responder: Callable[[list], list] | None = None,
                      valid: tuple[bool, str] = (True, "")) -> SimpleNamespace:
    """A namespace shaped like the ``samna`` module for the calls flexsnn makes.

    ``double.opened`` maps DeviceInfo ids to :class:`DevkitDouble`; ``double.closed`` lists
    closed boards; ``double.fail_open`` (an exception) makes ``open_device`` fail.
    """
    state = SimpleNamespace(opened={}, closed=[], fail_open=None, graphs=[])

    def get_all_devices() -> list:
        return list(infos or [])

    def open_device(info: DeviceInfoDouble) -> DevkitDouble:
        if state.fail_open is not None:
            raise state.fail_open
        board = state.opened.get(id(info))
        if board is None:
            board = state.opened[id(info)] = DevkitDouble(info, responder)
        return board

    def close_device(board: DevkitDouble) -> None:
        board.closed = True
        state.closed.append(board)

    def event_filter_graph() -> EventFilterGraphDouble:
        g = EventFilterGraphDouble()
        state.graphs.append(g)
        return g

    double = SimpleNamespace(
        device=SimpleNamespace(get_all_devices=get_all_devices, open_device=open_device,
                               close_device=close_device),
        speck2e=SimpleNamespace(
            configuration=SimpleNamespace(SpeckConfiguration=SpeckConfigurationDouble),
            event=SimpleNamespace(Spike=SpikeDouble, WriteNeuronValue=WriteNeuronValueDouble,
                                  ReadNeuronValue=ReadNeuronValueDouble, NeuronValue=NeuronValueDouble,
                                  ReadoutPinValue=ReadoutPinValueDouble),
            validate_configuration=lambda config: valid,
        ),
        graph=SimpleNamespace(EventFilterGraph=event_filter_graph),
        BasicSourceNode_speck2e_event_speck2e_input_event=BasicSourceNodeDouble,
        BasicSinkNode_speck2e_event_output_event=BasicSinkNodeDouble,
        state=state,
    )
    return double


def identity_responder(output_layer: int, *, latency_us: int = 5) -> Callable[[list], list]:
    """A responder for identity chip images: each input spike comes back once from
    ``output_layer`` at the same (x, y), feature 0, ``latency_us`` later."""
    def respond(spikes: list) -> list:
        return [SpikeDouble(output_layer, s.x, s.y, 0, s.timestamp + latency_us) for s in spikes]

    return respond
