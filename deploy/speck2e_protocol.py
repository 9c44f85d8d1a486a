"""Pure logic of the Speck2e devkit protocol: everything around the samna calls, without samna.

:mod:`flexsnn.deploy.speck2e` keeps its samna calls thin; what it sends and what it makes
of the replies is computed here, on NumPy arrays, so it is unit-tested where samna is absent:

- input events (:data:`flexsnn.data.EVENT_DTYPE`, ``t`` in µs) -> the fields of
  ``samna.speck2e.event.Spike`` (``layer``, ``x``, ``y``, ``feature``, ``timestamp``) with
  timestamps relative to the sample's first event (as sinabs' ``ChipFactory.xytp_to_events``
  with ``reset_timestamps=True``), DVS pooling and polarity merging done on the host, one
  event per input destination core;
- output ``Spike`` fields -> :data:`~flexsnn.deploy.backend.CHIP_EVENT_DTYPE` in the input's
  time base (sinabs' ``io.events_to_xytp`` reads the same fields);
- neuron addresses of ``ReadNeuronValue`` / ``WriteNeuronValue`` events (sinabs'
  ``io.calculate_neuron_address`` / ``neuron_address_to_cxy``);
- readout decoding (``ReadoutValue.value`` bit fields, ``ReadoutPinValue.index``) with the
  Speck2e channel erratum (readout neuron k reads core channel ``4*(k-1)``);
- output events -> class counts and the time of the decision;
- devkit selection among ``samna.device.get_all_devices()`` (by index or serial number);
- the bounded wait for output events (never hangs: a hard timeout).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from flexsnn.converters.chip_image import ChipImage, ReadoutConfig
from flexsnn.data.events import SensorSize, validate_events
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE
from flexsnn.errors import BackendUnavailable, ConfigError

#: The fields of ``samna.speck2e.event.Spike``, one row per event. ``layer`` is the core id
#: (0..8); ``timestamp`` is in µs on the devkit's stop watch.
SPIKE_FIELDS_DTYPE = np.dtype(
    [("layer", np.uint8), ("x", np.uint16), ("y", np.uint16), ("feature", np.uint16),
     ("timestamp", np.uint64)]
)

#: samna ``device_type_name`` of boards carrying a Speck2e (sinabs ``io.device_types``).
SPECK2E_DEVICE_TYPES = ("Speck2eDevKit", "Speck2eTestBoard")
#: Layer id of the readout block; a core sends its events there to feed the readout.
READOUT_LAYER = 12
#: Layer id the DVS pre-processing layer uses in monitored ``Spike`` events.
DVS_LAYER = 13
#: Number of address bits of a core's neuron memory (sinabs ``calculate_neuron_address``).
NEURON_ADDRESS_BITS = 18

#: ``ReadoutValue.value`` layout (Speck devkit datasheet, "Data Output Modes"):
#: bit 20 data valid, bits 19..16 index of the neuron of maximum average, bits 15..0 payload.
READOUT_VALID_BIT = 20
READOUT_INDEX_SHIFT = 16
READOUT_INDEX_MASK = 0xF
READOUT_PAYLOAD_MASK = 0xFFFF

USB_HINT = ("check that the devkit is plugged in with a USB 3 data cable, powered, not opened by "
            "another process, and that your user may access it (udev rules)")
SAMNA_HINT = "check that your samna version supports Speck2e (`pip show samna`; sinabs needs >= 0.40)"


# ---- input events -> samna Spike fields ----------------------------------------------------
def input_sensor(image: ChipImage) -> SensorSize:
    """The raw sensor the input events must fit: the image's input before DVS pooling/merging."""
    c, h, w = image.input.shape
    pool = image.input.pooling
    return SensorSize(w * pool, h * pool, 2 if image.input.merge_polarities else c)


def input_spike_fields(events: np.ndarray, image: ChipImage, *, start_delay_us: int = 0,
                       source: str = "<events>") -> np.ndarray:
    """Input events as samna ``Spike`` fields, ready to be written to the devkit.

    Args:
        events: :data:`~flexsnn.data.EVENT_DTYPE`, sorted by ``t`` (µs); checked against
            :func:`input_sensor`.
        image: gives the input's DVS pooling, polarity merging and destination cores.
        start_delay_us: added to every timestamp so that the first event lies in the future
            when the devkit's stop watch starts.

    Returns:
        :data:`SPIKE_FIELDS_DTYPE` with ``timestamp = t - t[0] + start_delay_us``,
        ``x = x // pooling``, ``y = y // pooling``, ``feature = 0 if merge else p``, one row per
        event and destination core (destinations in the image's order), in time order.
    """
    validate_events(events, input_sensor(image), source=source)
    if start_delay_us < 0:
        raise ConfigError("start_delay_us", start_delay_us, ">= 0")
    dests = tuple(image.input.destinations)
    n = events.size
    out = np.empty(n * len(dests), dtype=SPIKE_FIELDS_DTYPE)
    if n == 0:
        return out
    pool = image.input.pooling
    t = events["t"].astype(np.int64)
    stamps = (t - t[0] + start_delay_us).astype(np.uint64)
    feature = np.zeros(n, np.uint16) if image.input.merge_polarities else events["p"].astype(np.uint16)
    x = (events["x"].astype(np.int64) // pool).astype(np.uint16)
    y = (events["y"].astype(np.int64) // pool).astype(np.uint16)
    k = len(dests)
    for j, core in enumerate(dests):  # interleave: event i goes to every destination in turn
        sl = slice(j, None, k)
        out["layer"][sl] = core
        out["x"][sl], out["y"][sl], out["feature"][sl], out["timestamp"][sl] = x, y, feature, stamps
    return out


def output_events(layer: Sequence[int] | np.ndarray, x: Sequence[int] | np.ndarray,
                  y: Sequence[int] | np.ndarray, feature: Sequence[int] | np.ndarray,
                  timestamp: Sequence[int] | np.ndarray, *, cores: Iterable[int], t0_us: int = 0,
                  start_delay_us: int = 0) -> np.ndarray:
    """Output ``Spike`` fields -> :data:`CHIP_EVENT_DTYPE` in the input's time base.

    Events of layers outside ``cores`` (the DVS layer's echo, layer 13; the readout) are
    dropped. ``t = timestamp - start_delay_us + t0_us`` (µs), so an output caused by the input
    event at ``t`` carries a time ``>= t``. Emission order is kept.
    """
    layer = np.asarray(layer, dtype=np.int64)
    keep = np.isin(layer, np.fromiter(cores, dtype=np.int64))
    out = np.empty(int(keep.sum()), dtype=CHIP_EVENT_DTYPE)
    out["core"] = layer[keep]
    out["x"] = np.asarray(x, dtype=np.int64)[keep]
    out["y"] = np.asarray(y, dtype=np.int64)[keep]
    out["feature"] = np.asarray(feature, dtype=np.int64)[keep]
    out["t"] = np.asarray(timestamp, dtype=np.int64)[keep] - start_delay_us + t0_us
    return out


# ---- neuron addresses (ReadNeuronValue / WriteNeuronValue) -------------------------------
def _bits(n: int) -> int:
    return 0 if n <= 1 else math.ceil(math.log2(n))


def neuron_address_bits(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channel_bits, y_bits, x_bits) of a core's neuron map ``shape = (C, H, W)``."""
    c, h, w = shape
    return _bits(c), _bits(h), _bits(w)


def neuron_address(c: int | np.ndarray, x: int | np.ndarray, y: int | np.ndarray,
                   shape: tuple[int, int, int]) -> int | np.ndarray:
    """Neuron address of channel ``c`` at ``(x, y)`` in a map of ``shape = (C, H, W)``.

    The layout of sinabs' ``io.calculate_neuron_address``: the channel in the lowest bits,
    ``x`` shifted by the channel bits, ``y`` shifted by channel bits + y bits.

    Raises:
        ConfigError: the map needs more than 18 address bits, or its width and height need
            different numbers of bits: sinabs shifts ``y`` by channel bits + *y* bits, which
            equals the packed layout only when both are equal, so the address of a neuron of a
            non-square map is not documented unambiguously (reset such cores by re-applying
            the configuration instead).
    """
    c_bits, y_bits, x_bits = neuron_address_bits(shape)
    if c_bits + y_bits + x_bits > NEURON_ADDRESS_BITS:
        raise ConfigError("neuron map", shape, f"at most {NEURON_ADDRESS_BITS} address bits",
                          "shrink the core's output map")
    if x_bits != y_bits:
        raise ConfigError("neuron map", shape, "equal width and height bits for an unambiguous address",
                          "reset this core by re-applying its configuration instead")
    addr = (np.asarray(y, np.int64) << (c_bits + y_bits)) | (np.asarray(x, np.int64) << c_bits) \
        | np.asarray(c, np.int64)
    return int(addr) if addr.ndim == 0 else addr


def neuron_cxy(address: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Inverse of :func:`neuron_address`: ``(c, x, y)`` of ``address`` (sinabs ``neuron_address_to_cxy``)."""
    c_bits, y_bits, x_bits = neuron_address_bits(shape)
    return (address & ((1 << c_bits) - 1), (address >> c_bits) & ((1 << x_bits) - 1),
            address >> (c_bits + y_bits))


def core_neuron_addresses(shape: tuple[int, int, int]) -> np.ndarray:
    """Addresses of every neuron of a ``(C, H, W)`` map, int64, in (y, x, c) order."""
    c, h, w = shape
    yy, xx, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return np.asarray(neuron_address(cc.ravel(), xx.ravel(), yy.ravel(), shape), dtype=np.int64)


def states_from_neuron_values(addresses: Sequence[int] | np.ndarray, values: Sequence[int] | np.ndarray,
                              shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``NeuronValue`` replies (``address``, ``neuron_state``) -> states ``[C, H, W]`` int64 and a
    bool mask of the neurons that replied. Addresses outside the map raise ``ValueError``."""
    c, h, w = shape
    states = np.zeros(shape, dtype=np.int64)
    seen = np.zeros(shape, dtype=bool)
    for a, v in zip(np.asarray(addresses, dtype=np.int64).tolist(), np.asarray(values, dtype=np.int64).tolist()):
        cc, xx, yy = neuron_cxy(int(a), shape)
        if not (cc < c and xx < w and yy < h):
            raise ValueError(f"neuron address {a} is outside the map {shape}")
        states[cc, yy, xx], seen[cc, yy, xx] = v, True
    return states, seen


# ---- readout ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadoutSample:
    """One decoded ``ReadoutValue.value`` (21 bits).

    ``valid``: bit 20; ``index``: bits 19..16, the readout neuron of maximum moving average
    (0 = idle, k = readout neuron k); ``payload``: bits 15..0 (meaning set by ``output_mode_sel``).
    """

    valid: bool
    index: int
    payload: int


def decode_readout_value(value: int) -> ReadoutSample:
    """Split a ``ReadoutValue.value`` into its bit fields."""
    value = int(value)
    if value < 0 or value >> (READOUT_VALID_BIT + 1):
        raise ValueError(f"ReadoutValue.value {value:#x} is not a 21-bit value")
    return ReadoutSample(bool((value >> READOUT_VALID_BIT) & 1),
                         (value >> READOUT_INDEX_SHIFT) & READOUT_INDEX_MASK,
                         value & READOUT_PAYLOAD_MASK)


def readout_core_channel(index: int, *, erratum: bool = True) -> int:
    """Core channel that readout neuron ``index`` (1..15) reads: ``4*(index-1)`` on Speck2e/2f."""
    if not 1 <= index <= 15:
        raise ValueError(f"readout neuron index {index} outside 1..15 (0 is the idle class)")
    return 4 * (index - 1) if erratum else index - 1


def readout_class(index: int, readout: ReadoutConfig) -> int | None:
    """0-based class of readout neuron ``index``; ``None`` for the idle index 0 or an unused one.

    The chip's readout neuron k reads core channel ``4*(k-1)`` (erratum) and a ChipImage
    with ``channel_erratum`` places class k-1 there, so neuron k is class k-1. An image built
    without the erratum cannot be read by the Speck2e readout (the plan refuses it).
    """
    if index == 0 or index > readout.num_classes:
        return None
    channel = readout_core_channel(index, erratum=readout.channel_erratum)
    return next((k for k in range(readout.num_classes) if readout.channel_of_class(k) == channel), None)


def readout_votes(indices: Iterable[int], readout: ReadoutConfig) -> np.ndarray:
    """Votes per class (int64 ``[num_classes]``) from ``ReadoutPinValue.index`` values."""
    votes = np.zeros(readout.num_classes, dtype=np.int64)
    for idx in indices:
        k = readout_class(int(idx), readout)
        if k is not None:
            votes[k] += 1
    return votes


# ---- output events -> classes ------------------------------------------------------------
def class_channels(image: ChipImage) -> np.ndarray:
    """Output-core channel of each class (int64 ``[num_classes]``)."""
    if image.readout is not None:
        return np.array([image.readout.channel_of_class(k) for k in range(image.readout.num_classes)],
                        dtype=np.int64)
    return np.arange(image.num_classes, dtype=np.int64)


def class_counts(events: np.ndarray, image: ChipImage) -> np.ndarray:
    """Spikes per class (int64 ``[num_classes]``) among the output core's events."""
    channels = class_channels(image)
    feats = events["feature"][events["core"] == image.output_core].astype(np.int64)
    lookup = {int(ch): k for k, ch in enumerate(channels)}
    counts = np.zeros(channels.size, dtype=np.int64)
    for f in feats:
        k = lookup.get(int(f))
        if k is not None:
            counts[k] += 1
    return counts


def decision_time_us(events: np.ndarray, image: ChipImage) -> int | None:
    """Time (µs, the events' time base) from which the running arg-max of the class counts
    equals the final prediction and no longer changes; ``None`` when no class spiked.

    Ties go to the lowest class index, as in :attr:`RunResult.prediction`.
    """
    channels = class_channels(image)
    lookup = {int(ch): k for k, ch in enumerate(channels)}
    out = events[events["core"] == image.output_core]
    counts = np.zeros(channels.size, dtype=np.int64)
    history: list[tuple[int, int]] = []
    for ev in out:
        k = lookup.get(int(ev["feature"]))
        if k is None:
            continue
        counts[k] += 1
        history.append((int(ev["t"]), int(np.argmax(counts))))
    if not history:
        return None
    final = history[-1][1]
    t_decided = history[-1][0]
    for t, lead in reversed(history):
        if lead != final:
            break
        t_decided = t
    return t_decided


# ---- devkit discovery ----------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceDescriptor:
    """What flexsnn needs of a ``samna.device.DeviceInfo``; ``info`` is the samna object."""

    type_name: str
    serial: str = ""
    usb_bus: int = -1
    usb_address: int = -1
    info: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return (f"{self.type_name} (serial {self.serial or '?'}, USB bus {self.usb_bus}, "
                f"address {self.usb_address})")


def select_devkit(devices: Sequence[DeviceDescriptor], *, index: int | None = None,
                  serial: str | None = None,
                  type_names: Sequence[str] = SPECK2E_DEVICE_TYPES) -> DeviceDescriptor:
    """Pick one Speck2e board: by ``serial``, else the ``index``-th (default 0) in USB-address
    order (as sinabs' ``io.get_device_map`` sorts them).

    Raises:
        BackendUnavailable: no Speck2e board, index out of range or serial not found; the
            message lists every connected device and what to check.
    """
    boards = sorted((d for d in devices if d.type_name in type_names),
                    key=lambda d: (d.usb_bus, d.usb_address))
    seen = ", ".join(d.describe() for d in devices) or "none"
    if not boards:
        raise BackendUnavailable("speck2e", f"no Speck2e devkit found (devices samna sees: {seen})",
                                 f"{USB_HINT}; {SAMNA_HINT}")
    if serial is not None:
        for d in boards:
            if d.serial == serial:
                return d
        raise BackendUnavailable("speck2e", f"no Speck2e devkit with serial {serial!r} "
                                 f"(Speck2e devkits: {', '.join(d.describe() for d in boards)})",
                                 "pass one of the listed serial numbers, or an index")
    i = 0 if index is None else index
    if not 0 <= i < len(boards):
        raise BackendUnavailable("speck2e", f"devkit index {i} out of range: {len(boards)} Speck2e "
                                 f"devkit(s) connected ({', '.join(d.describe() for d in boards)})",
                                 f"use an index 0..{len(boards) - 1}; {USB_HINT}")
    return boards[i]


# ---- bounded wait ----------------------------------------------------------------------------
@dataclass
class Collected:
    """Result of :func:`collect_until_quiet`: the items read, whether the hard timeout hit,
    and the seconds waited."""

    items: list
    timed_out: bool
    waited_s: float


def collect_until_quiet(read: Callable[[], list], *, min_wait_s: float, quiet_s: float = 0.1,
                        timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> Collected:
    """Read output batches until none arrives for ``quiet_s``, never longer than ``timeout_s``.

    As sinabs' ``DynapcnnNetwork.hw_forward``: wait at least ``min_wait_s`` (the sample's
    duration), then poll every ``quiet_s`` until a poll brings nothing new. Unlike it, a
    chip that keeps talking (or a replay that never ends) stops at ``timeout_s``, with
    ``timed_out=True`` and whatever was read.
    """
    if timeout_s <= 0 or quiet_s <= 0 or min_wait_s < 0:
        raise ConfigError("timeout_s/quiet_s/min_wait_s", (timeout_s, quiet_s, min_wait_s),
                          "timeout_s > 0, quiet_s > 0, min_wait_s >= 0")
    start = clock()
    items: list = []
    first = min(min_wait_s, timeout_s)
    if first > 0:
        sleep(first)
    items.extend(read())
    while True:
        if clock() - start >= timeout_s:
            return Collected(items, True, clock() - start)
        sleep(min(quiet_s, max(timeout_s - (clock() - start), 0.0)))
        batch = read()
        if not batch:
            return Collected(items, False, clock() - start)
        items.extend(batch)

