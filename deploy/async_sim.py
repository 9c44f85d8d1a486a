"""Event-driven (asynchronous) simulator of a Speck2e :class:`ChipImage`, integer-exact.

The simulator runs from a ChipImage alone (no torch, no samna). Input DVS events are consumed
one at a time in timestamp order; each one, and every event it causes in any core, is handled
before the next input event (depth-first, as the chip). Timestamps play no part in the
arithmetic; they only stamp output events and drive the slow clock of the leak.

Rules
-----
Facts from the chip (ARCHITECTURE.md, sinabs' Speck docs):

1. Weights are int8, neuron states 16-bit signed, thresholds integers. An event into a core
   adds ``w[c_out, c_in, ky, kx]`` to every neuron ``(c_out, yo, xo)`` whose kernel window
   (stride, zero padding, cross-correlation as ``torch.nn.Conv2d``) covers the event.
2. After the addition a neuron with ``v >= threshold_high`` spikes and resets (subtract
   ``threshold_high`` or set to zero, ``reset_mode``); then ``v = max(v, threshold_low)``.
3. A core's spikes go to up to two destinations, each with its own sum pooling ``p``.
4. With a readout, class ``k`` (0-based) counts the output core's spikes on channel ``4k``
   (Speck2e erratum) or ``k`` (``channel_erratum=False``); without one, class = channel.
5. A bias (``leak_enabled``) is added to every neuron of the core on each tick of a slow clock.

Choices where the public sources are silent (each is a parameter of :class:`SimConfig`):

- ``spike="single"`` (default): a neuron emits at most one spike per update (sinabs' Speck
  docs); a neuron left above threshold fires again at its next update (input or tick).
  ``"multi"``: ``v // threshold_high`` spikes at once (sinabs' MultiSpike), each forwarded.
- ``update_order="channel-major"`` (default): the neurons one event reaches are updated in
  C order of ``[c_out, yo, xo]`` (channel, row, column); ``"position-major"``: row, column,
  channel. Spikes leave the core in update order.
- ``order="depth-first"`` (default): a core first finishes the update of one incoming event,
  then forwards its spikes in update order; each forwarded event (destination 0 before 1) and
  everything it causes is handled before the next one (a stack). ``"breadth-first"``: a queue
  (all events of one generation before the next). For a plain chain both give each core the
  same event sequence; they differ only with merges or feedback.
- Pooling: a sum-pooled destination receives one event per source spike, at
  ``(c, y // p, x // p)``; spikes in rows/columns cut off by floor pooling are dropped (as
  ``SumPool2d`` drops them). The DVS input pooling works the same way; with
  ``merge_polarities`` every event goes to channel 0. ``InputConfig.shape`` is the map after
  DVS pooling, so the accepted sensor is ``(W*p, H*p, 2 if merge_polarities else C)``.
- ``saturate=True`` (default): the 16-bit state saturates at -32768 / 32767 after each
  addition; ``False``: it wraps (two's complement).
- SynOps: every weight applied by an incoming event (zeros included), counted at the
  receiving core; bias ticks are not SynOps.
- Slow clock: ``leak_period_us`` (default 1000 µs = 1 kHz). Ticks fall at
  ``t_first + n * leak_period_us`` (n >= 1) and a tick at time ``t`` is handled before input
  events with timestamp ``>= t``; ticks stop at the last input event (no tail). On a tick the
  leaky cores add their biases in core order (:meth:`ChipImage.core_order`), each core's
  spikes are forwarded (same order rules) before the next core leaks. No leak without biases.
- ``max_cascade``: an input event (or tick) may cause at most this many core events
  (guards against runaway feedback in time); past it :class:`SimulationError` is raised.
- ``max_events``: pending plus recorded events may not pass this many (guards memory: a core
  that feeds itself, a 2-core cycle or thresholds of 1 make both grow without bound); past it
  :class:`SimulationError` is raised. Default (None): :func:`default_max_events`, sized to this
  machine's memory. Recurrent images are allowed; only a runaway stops.
- ``kernel``: ``"fast"`` (default): the stream kernel (:mod:`flexsnn.deploy.kernels_stream`,
  core by core) when every core has one source and one core is recorded, else the event loop
  (:mod:`flexsnn.deploy.kernels_fast`); ``"event"``: always the event loop; ``"reference"``
  (:mod:`flexsnn.deploy.kernels`, the straightforward layout). All give identical results.

State (every neuron 0) is reset before every sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from flexsnn.converters.chip_image import ChipImage, check_chip_image
from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.data.events import SensorSize, validate_events
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE, RunResult
from flexsnn.deploy import kernels as K
from flexsnn.deploy import kernels_fast as KF
from flexsnn.deploy import kernels_stream as KS
from flexsnn.errors import ChipConstraintError, ConfigError, FlexsnnError, Violation

log = logging.getLogger(__name__)

SpikeMode = Literal["single", "multi"]
EventOrder = Literal["depth-first", "breadth-first"]
UpdateOrder = Literal["channel-major", "position-major"]
Kernel = Literal["fast", "event", "reference"]

#: memory one held event may cost at the peak (bytes, with margin): a recorded event is 40 B
#: in the kernel's buffer, 120 B while it doubles, then 16 B in the result; a pending one 8-96 B
BYTES_PER_EVENT = 160


def memory_budget_bytes() -> int:
    """Bytes this process may sensibly use: the smaller of physical memory and the address
    space limit (``RLIMIT_AS``), whichever is known."""
    import os
    import resource

    budget = 1 << 62
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        budget = min(budget, int(soft))
    return int(budget)


def default_max_events() -> int:
    """Default ``max_events``: a quarter of :func:`memory_budget_bytes` at
    :data:`BYTES_PER_EVENT` bytes per event (at least 100,000)."""
    return max(100_000, memory_budget_bytes() // 4 // BYTES_PER_EVENT)


class SimulationError(FlexsnnError):
    """The simulation could not finish (e.g. runaway feedback past ``max_cascade``)."""


@dataclass(frozen=True)
class SimConfig:
    """Rules of the asynchronous simulator (see the module docstring, "Rules").

    Attributes:
        spike: "single" (one spike per neuron update) or "multi" (``v // threshold``).
        order: "depth-first" (stack) or "breadth-first" (queue) within one input event.
        update_order: "channel-major" or "position-major" order of a footprint's neurons.
        saturate: 16-bit state saturates (True) or wraps (False).
        leak_period_us: slow-clock period in µs (> 0); used only by cores with a leak.
        record_all: record the output events of every core, not only the output core's.
        max_cascade: most core events one input event or tick may cause.
        max_events: most pending plus recorded events (memory guard); None: sized to this
            machine's memory (:func:`default_max_events`).
        kernel: "fast" (default: stream kernel where it applies, else event loop), "event"
            (always the event loop) or "reference" (straightforward layout); same results.
    """

    spike: SpikeMode = "single"
    order: EventOrder = "depth-first"
    update_order: UpdateOrder = "channel-major"
    saturate: bool = True
    leak_period_us: int = 1000
    record_all: bool = False
    max_cascade: int = 10_000_000
    max_events: int | None = None
    kernel: Kernel = "fast"

    def __post_init__(self) -> None:
        if self.spike not in ("single", "multi"):
            raise ConfigError("spike", self.spike, "'single' or 'multi'")
        if self.order not in ("depth-first", "breadth-first"):
            raise ConfigError("order", self.order, "'depth-first' or 'breadth-first'")
        if self.update_order not in ("channel-major", "position-major"):
            raise ConfigError("update_order", self.update_order, "'channel-major' or 'position-major'")
        if int(self.leak_period_us) <= 0:
            raise ConfigError("leak_period_us", self.leak_period_us, "an integer > 0 (µs)")
        if int(self.max_cascade) < 1:
            raise ConfigError("max_cascade", self.max_cascade, "an integer >= 1")
        if self.max_events is not None and int(self.max_events) < 1:
            raise ConfigError("max_events", self.max_events, "an integer >= 1 (or None: sized to memory)")
        if self.kernel not in ("fast", "event", "reference"):
            raise ConfigError("kernel", self.kernel, "'fast', 'event' or 'reference'")


@dataclass
class PackedImage:
    """A ChipImage flattened into the arrays :func:`flexsnn.deploy.kernels.run_events` takes.

    ``core_ids[i]`` is the chip core id of local core ``i``; ``ch_off`` the offsets of each
    core's channels in the per-channel spike counts. ``weights`` (int8, per core
    ``[c_out, c_in, k, k]``) serve the reference kernel; ``weights_t`` (int16, per core
    ``[c_in, ky, k - 1 - kx, c_out]``) and the footprint tables ``fp_*`` (see
    :func:`flexsnn.deploy.kernels_fast.run_events_fast`) the fast one; ``weights_x`` (int16,
    per core ``[c_in, ky, kx0, d, c_out]`` from ``wx_off``) and the lane tables the stream
    kernel (:mod:`flexsnn.deploy.kernels_stream`), which ``stream_ok`` allows. ``dests`` is
    int64 ``[n, 2, 3]``: (local core, pooling, log2 of the pooling or -1), -1 when unused.
    """

    core_ids: np.ndarray
    geom: np.ndarray
    weights: np.ndarray
    w_off: np.ndarray
    biases: np.ndarray
    b_off: np.ndarray
    s_off: np.ndarray
    n_state: int
    dests: np.ndarray
    input_dests: np.ndarray
    ch_off: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    weights_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    fp_ylo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp_yhi: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp_xlo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp_xhi: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp_yoff: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fp_xoff: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    weights_x: np.ndarray = field(default_factory=lambda: np.zeros(KS.PAD, dtype=np.int16))
    wx_off: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lane_x: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lane_c: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lane_off: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    stream_ok: bool = False


def input_sensor(image: ChipImage) -> SensorSize:
    """The DVS sensor geometry ``image`` accepts (before DVS pooling and polarity merging)."""
    c, h, w = image.input.shape
    p = image.input.pooling
    return SensorSize(width=w * p, height=h * p, polarities=2 if image.input.merge_polarities else c)


def _simulator_violations(image: ChipImage) -> list[Violation]:
    """Checks beyond :func:`chip_image_violations` that the simulator relies on."""
    out = []
    for d in image.input.destinations:
        try:
            core = image.core(d)
        except KeyError:
            continue
        if tuple(core.input_shape) != tuple(image.input.shape):
            out.append(Violation(f"core {d}", "input_shape", core.input_shape,
                                 f"the DVS input shape {image.input.shape}", "re-export"))
    return out


def pack_image(image: ChipImage) -> PackedImage:
    """Flatten ``image`` (already checked) into kernel arrays, cores in ``core_order()``."""
    order = image.core_order()
    # cores that no input reaches still get simulated state (they can receive nothing)
    order += [c.core for c in image.cores if c.core not in order]
    local = {cid: i for i, cid in enumerate(order)}
    n = len(order)
    geom = np.zeros((n, K.N_GEOM), dtype=np.int64)
    dests = np.full((n, 2, 3), -1, dtype=np.int64)
    w_parts, wt_parts, wx_parts, b_parts, lx_parts, lc_parts = [], [], [], [], [], []
    wx_off = np.zeros(n, dtype=np.int64)
    lane_off = np.zeros(n, dtype=np.int64)
    sources: list[set[int]] = [set() for _ in range(n)]
    for d in image.input.destinations:
        sources[local[d]].add(-1)
    fp = {"ylo": [], "yhi": [], "xlo": [], "xhi": []}
    fp_yoff = np.zeros(n, dtype=np.int64)
    fp_xoff = np.zeros(n, dtype=np.int64)
    ypos = xpos = 0
    w_off = np.zeros(n, dtype=np.int64)
    b_off = np.zeros(n, dtype=np.int64)
    s_off = np.zeros(n, dtype=np.int64)
    ch_off = np.zeros(n + 1, dtype=np.int64)
    wpos = bpos = spos = 0
    for i, cid in enumerate(order):
        c = image.core(cid)
        c_out, c_in, k, _ = c.weights.shape
        _, h_in, w_in = c.input_shape
        _, h_out, w_out = c.output_shape
        geom[i] = (c_in, h_in, w_in, c_out, h_out, w_out, k, c.stride[0], c.stride[1],
                   c.padding[0], c.padding[1], c.threshold_high, c.threshold_low,
                   1 if c.reset_mode == "zero" else 0,
                   1 if (c.leak_enabled and np.any(c.biases != 0)) else 0, cid)
        for d_i, d in enumerate(c.destinations):
            sources[local[d.core]].add(i)
            p = int(d.pooling)
            dests[i, d_i] = (local[d.core], p, p.bit_length() - 1 if p & (p - 1) == 0 else -1)
        w_parts.append(np.ascontiguousarray(c.weights, dtype=np.int8).ravel())
        # [c_in, ky, k-1-kx, c_out]: kx reversed, so the output columns of one footprint row
        # meet consecutive weights (one contiguous add per row on stride-1 cores)
        wt_parts.append(np.ascontiguousarray(np.asarray(c.weights).transpose(1, 2, 3, 0)[:, :, ::-1],
                                             dtype=np.int16).ravel())
        wx_off[i] = sum(a.size for a in wx_parts)
        wx_parts.append(KS.expanded_weights(c.weights, c.stride[1]))
        lane_off[i] = sum(a.size for a in lx_parts)
        lx, lc = KS.lane_tables(c_out, k, c.stride[1])
        lx_parts.append(lx)
        lc_parts.append(lc)
        for axis, (n_in, n_out, st, pd) in (("y", (h_in, h_out, c.stride[0], c.padding[0])),
                                            ("x", (w_in, w_out, c.stride[1], c.padding[1]))):
            lo, hi = KF.footprint_tables(n_in, n_out, k, st, pd)
            fp[axis + "lo"].append(lo)
            fp[axis + "hi"].append(hi)
        fp_yoff[i], fp_xoff[i] = ypos, xpos
        ypos += h_in
        xpos += w_in
        b_parts.append(np.ascontiguousarray(c.biases, dtype=np.int16).ravel())
        w_off[i], b_off[i], s_off[i] = wpos, bpos, spos
        wpos += w_parts[-1].size
        bpos += b_parts[-1].size
        spos += c_out * h_out * w_out
        ch_off[i + 1] = ch_off[i] + c_out
    return PackedImage(
        core_ids=np.asarray(order, dtype=np.int64), geom=geom,
        weights=np.concatenate(w_parts) if w_parts else np.zeros(0, np.int8), w_off=w_off,
        biases=np.concatenate(b_parts) if b_parts else np.zeros(0, np.int16), b_off=b_off,
        s_off=s_off, n_state=spos, dests=dests,
        input_dests=np.asarray([local[d] for d in image.input.destinations], dtype=np.int64),
        ch_off=ch_off,
        weights_t=np.concatenate(wt_parts) if wt_parts else np.zeros(0, np.int16),
        fp_ylo=_cat64(fp["ylo"]), fp_yhi=_cat64(fp["yhi"]), fp_xlo=_cat64(fp["xlo"]),
        fp_xhi=_cat64(fp["xhi"]), fp_yoff=fp_yoff, fp_xoff=fp_xoff,
        weights_x=np.concatenate([*wx_parts, np.zeros(KS.PAD, np.int16)]), wx_off=wx_off,
        lane_x=_cat64(lx_parts), lane_c=_cat64(lc_parts), lane_off=lane_off,
        stream_ok=KS.stream_plan([sorted(s) for s in sources]),
    )


def _cat64(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def map_input_events(events: np.ndarray, image: ChipImage) -> tuple[np.ndarray, ...]:
    """DVS events -> (channel, row, column, t) int64 arrays of the input map (pooling, merge)."""
    p = image.input.pooling
    c = (np.zeros(events.size, dtype=np.int64) if image.input.merge_polarities
         else events["p"].astype(np.int64))
    return (c, events["y"].astype(np.int64) // p, events["x"].astype(np.int64) // p,
            events["t"].astype(np.int64))


def class_counts_from_channels(image: ChipImage, channel_counts: np.ndarray) -> np.ndarray:
    """Spikes per class from the output core's per-channel spike counts (readout mapping)."""
    if image.readout is None:
        return np.asarray(channel_counts, dtype=np.int64).copy()
    chans = [image.readout.channel_of_class(k) for k in range(image.readout.num_classes)]
    return np.asarray(channel_counts, dtype=np.int64)[chans]


class AsyncSimulator:
    """Integer-exact, event-driven Speck2e simulator (:class:`~flexsnn.deploy.Backend`).

    Args:
        config: the rules (:class:`SimConfig`); keyword options build one instead
            (``AsyncSimulator(spike="multi")``).
        limits: chip limits the image is checked against on :meth:`load`.

    Example::

        sim = AsyncSimulator()
        sim.load(ChipImage.load("model.chip"))
        result = sim.run(events)          # RunResult; result.prediction
    """

    name = "async"
    deterministic = True
    real_time = False

    def __init__(self, config: SimConfig | None = None, *, limits: ChipLimits = SPECK2E,
                 **options) -> None:
        if config is not None and options:
            raise ConfigError("options", sorted(options), "either config= or keyword options")
        known = set(SimConfig.__dataclass_fields__)
        if set(options) - known:
            raise ConfigError("AsyncSimulator option", sorted(set(options) - known),
                              f"one of {sorted(known)}")
        self.config = config if config is not None else SimConfig(**options)
        self.limits = limits
        self.image: ChipImage | None = None
        self._packed: PackedImage | None = None
        self._state: np.ndarray | None = None
        self._sensor: SensorSize | None = None
        self._kernel: str = self.config.kernel
        self._record = np.zeros(0, dtype=np.uint8)
        self._out_local = 0
        self._max_events = 0
        #: the kernel that ran the last sample: "stream", "event" or "reference"
        self.last_path: str | None = None

    # ---- Backend protocol -----------------------------------------------------------------
    def load(self, image: ChipImage) -> None:
        """Check ``image`` (every chip limit; raises ChipConstraintError) and prepare it."""
        check_chip_image(image, limits=self.limits)
        extra = _simulator_violations(image)
        if extra:
            raise ChipConstraintError(extra, chip=f"{self.limits.name} (simulator)")
        if self.config.spike == "multi":
            bad = [c.core for c in image.cores if c.threshold_high <= 0]
            if bad:
                raise ConfigError("spike", "multi", "threshold_high > 0 on every core",
                                  f"cores {bad} have threshold_high <= 0; use spike='single'")
        self.image = image
        self._packed = pack_image(image)
        self._kernel = self.config.kernel
        if self._kernel in ("fast", "event") and not all(KF.fast_kernel_supports(c.threshold_high, c.threshold_low)
                                              for c in image.cores):
            log.debug("thresholds outside -32768 <= low < high <= 32767: reference kernel")
            self._kernel = "reference"
        # fast: [h, w, c] per core, 16 bits; reference: [c, h, w], int32 holding 16-bit values
        # (the fast kernels' vectors may read and rewrite KS.PAD entries past a core's block)
        self._state = (np.zeros(self._packed.n_state + KS.PAD, dtype=np.int16)
                       if self._kernel != "reference" else np.zeros(self._packed.n_state, dtype=np.int32))
        self._sensor = input_sensor(image)
        # per-run constants: the recorded cores, the output core's local index, the memory guard
        self._out_local = int(np.flatnonzero(self._packed.core_ids == image.output_core)[0])
        self._record = np.zeros(len(self._packed.core_ids), dtype=np.uint8)
        if self.config.record_all:
            self._record[:] = 1
        self._record[self._out_local] = 1
        self._max_events = self.max_events

    def reset(self) -> None:
        """Zero every neuron state."""
        if self._state is not None:
            self._state[:] = 0

    def neuron_states(self) -> dict[int, np.ndarray]:
        """Core id -> copy of its neuron states, int32 ``[c_out, h_out, w_out]`` (16-bit values)."""
        self._require_loaded()
        pk = self._packed
        out = {}
        for i, cid in enumerate(pk.core_ids):
            c_out, h, w = (int(v) for v in pk.geom[i, [K.G_COUT, K.G_HOUT, K.G_WOUT]])
            block = self._state[pk.s_off[i]:pk.s_off[i] + c_out * h * w]
            if self._kernel != "reference":  # [h, w, c] -> [c, h, w]
                out[int(cid)] = block.reshape(h, w, c_out).transpose(2, 0, 1).astype(np.int32)
            else:
                out[int(cid)] = block.reshape(c_out, h, w).copy()
        return out

    def factory_spec(self) -> tuple[str, dict]:
        """``(name, options)`` with which :func:`flexsnn.deploy.factory.make_backend` rebuilds
        an equivalent backend (used by multi-process evaluation)."""
        from dataclasses import asdict

        return self.name, asdict(self.config)

    def validate(self, events: np.ndarray, *, source: str = "<events>") -> np.ndarray:
        """Check ``events`` against the loaded image's input (EventFormatError if bad)."""
        self._require_loaded()
        return validate_events(events, self._sensor, source=source)

    def run(self, events: np.ndarray, *, source: str = "<events>") -> RunResult:
        """Reset, validate ``events`` (EVENT_DTYPE, sorted by t, µs) and simulate them.

        Raises:
            EventFormatError: events outside the input, bad polarity, unsorted, wrong dtype.
            SimulationError: more than ``max_cascade`` core events from one input event, or
                more than ``max_events`` pending plus recorded events.
        """
        self._require_loaded()
        validate_events(events, self._sensor, source=source)
        self.reset()
        pk, cfg, image = self._packed, self.config, self.image
        in_c, in_y, in_x, in_t = map_input_events(events, image)
        record, out_local = self._record, self._out_local
        max_events = self._max_events
        rules = (np.int64(cfg.leak_period_us), record, cfg.spike == "multi", bool(cfg.saturate),
                 cfg.order == "breadth-first", cfg.update_order == "position-major",
                 np.int64(cfg.max_cascade), np.int64(max_events))
        out = None
        if self._kernel == "fast" and pk.stream_ok and int(record.sum()) == 1:
            out = KS.run_events_stream(
                in_c, in_y, in_x, in_t, pk.input_dests, pk.geom, pk.weights_x, pk.wx_off,
                pk.biases, pk.b_off, self._state, pk.s_off, pk.dests, pk.fp_ylo, pk.fp_yhi,
                pk.fp_xlo, pk.fp_xhi, pk.fp_yoff, pk.fp_xoff, pk.lane_x, pk.lane_c, pk.lane_off,
                rules[0], np.int64(out_local), rules[2], rules[3], rules[5], rules[6], rules[7])
            self.last_path = "stream"
            if out[5] == KS.STATUS_FALLBACK:  # a limit may be near: the event loop decides
                self.reset()
                out = None
        if out is None and self._kernel != "reference":
            self.last_path = "event"
            out = KF.run_events_fast(
                in_c, in_y, in_x, in_t, pk.input_dests, pk.geom, pk.weights_t, pk.w_off,
                pk.biases, pk.b_off, self._state, pk.s_off, pk.dests, pk.fp_ylo, pk.fp_yhi,
                pk.fp_xlo, pk.fp_xhi, pk.fp_yoff, pk.fp_xoff, *rules)
        elif out is None:
            self.last_path = "reference"
            out = K.run_events(in_c, in_y, in_x, in_t, pk.input_dests, pk.geom, pk.weights,
                               pk.w_off, pk.biases, pk.b_off, self._state, pk.s_off, pk.dests,
                               *rules)
        rec, n_rec, spike_counts, synops, channel_counts, status, n_done = out
        if status == K.STATUS_CASCADE_LIMIT:
            raise SimulationError(
                f"{source}: input event {n_done} caused more than max_cascade="
                f"{cfg.max_cascade} core events (runaway activity or feedback); raise "
                "max_cascade or check thresholds")
        if status == K.STATUS_EVENT_LIMIT:
            cores = ", ".join(f"core {int(c)}: {int(n):,}" for c, n in zip(pk.core_ids, spike_counts))
            raise SimulationError(
                f"{source}: stopped at input event {n_done}: pending plus recorded events would "
                f"pass max_events={max_events:,} (about {max_events * BYTES_PER_EVENT / 2**30:.1f} "
                f"GiB; spikes so far: {cores}). The activity runs away (a core feeding itself or "
                "a cycle with loop gain >= 1, or thresholds too low): check thresholds and "
                "feedback weights, or raise --max-events if the memory is there")
        return self._result(rec, n_rec, spike_counts, synops, channel_counts, events)

    def predict(self, events: np.ndarray) -> int:
        """Predicted class (arg-max of the class counts; -1 when no class spiked)."""
        return self.run(events).prediction

    def close(self) -> None:
        """Nothing to release (kept for the Backend protocol)."""
        return None

    @property
    def max_events(self) -> int:
        """The memory guard in effect (``config.max_events`` or :func:`default_max_events`)."""
        return int(self.config.max_events) if self.config.max_events is not None else default_max_events()

    # ---- helpers ----------------------------------------------------------------------------
    def _require_loaded(self) -> None:
        if self._packed is None:
            raise ConfigError("image", None, "a loaded ChipImage", "call load(image) first")

    def _result(self, rec, n_rec, spike_counts, synops, channel_counts, events) -> RunResult:
        pk, image = self._packed, self.image
        out = np.empty(n_rec, dtype=CHIP_EVENT_DTYPE)
        out["core"] = pk.core_ids[rec[0, :n_rec]]
        out["x"], out["y"], out["feature"], out["t"] = rec[1, :n_rec], rec[2, :n_rec], \
            rec[3, :n_rec], rec[4, :n_rec]
        ids = [int(c) for c in pk.core_ids]
        out_local = ids.index(image.output_core)
        ch = channel_counts[pk.ch_off[out_local]:pk.ch_off[out_local + 1]]
        return RunResult(
            events=out,
            spike_counts={cid: int(spike_counts[i]) for i, cid in enumerate(ids)},
            synops={cid: int(synops[i]) for i, cid in enumerate(ids)},
            class_counts=class_counts_from_channels(image, ch),
            input_events=int(events.size),
            duration_us=int(events["t"][-1] - events["t"][0]) if events.size else 0,
            extras={"t0_us": int(events["t"][0]) if events.size else 0,
                    "channel_counts": {cid: channel_counts[pk.ch_off[i]:pk.ch_off[i + 1]].tolist()
                                       for i, cid in enumerate(ids)}},
        )
