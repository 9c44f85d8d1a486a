"""An independent, slow, plain-Python Speck2e reference simulator, and its backend.

Written separately from :mod:`flexsnn.deploy.kernels` from the rules in
:mod:`flexsnn.deploy.async_sim` (module docstring, "Rules"): for each event it enumerates
*every* output neuron of the core and asks whether its receptive field contains the event (no
footprint arithmetic; the test is vectorised with NumPy, the updates run one neuron at a time
in enumeration order), keeps the neuron states in nested Python lists, and follows the
depth-first order by plain recursion (breadth-first with a deque). It works on the ChipImage
objects directly (no packing).

:class:`ReferenceBackend` wraps it in the :class:`~flexsnn.deploy.backend.Backend` protocol
(``make_backend("reference")``), so the hardware-in-the-loop suite can compare the compiled
simulator with something it was not derived from (``flexsnn hwtest --backend reference``).
It is about 100x slower than the simulator: use it on small images and a few samples.
"""

from __future__ import annotations

import sys
from collections import deque

import numpy as np

from flexsnn.converters.chip_image import ChipImage, check_chip_image
from flexsnn.deploy.async_sim import SimulationError, class_counts_from_channels, input_sensor
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE, RunResult
from flexsnn.errors import ConfigError

S_MIN, S_MAX = -32768, 32767


class RefSim:
    """The reference rules. ``run(events)`` returns (events list of (core, x, y, feature, t),
    spike counts per core, synops per core); options as :class:`~flexsnn.deploy.async_sim.SimConfig`.
    ``max_events`` bounds the core events of one run (a runaway feedback loop raises
    :class:`~flexsnn.errors.SimulationError` instead of growing without bound)."""

    def __init__(self, image, *, spike="single", order="depth-first", update_order="channel-major",
                 saturate=True, leak_period_us=1000, max_events=5_000_000):
        self.image = image
        self.multi = spike == "multi"
        self.dfs = order == "depth-first"
        self.pos_major = update_order == "position-major"
        self.saturate = saturate
        self.period = leak_period_us
        self.max_events = max_events
        self.cores = {c.core: c for c in image.cores}
        self._enum = {cid: self._neurons(c) for cid, c in self.cores.items()}

    def _fresh_state(self):
        st = {}
        for cid, c in self.cores.items():
            co, h, w = c.output_shape
            st[cid] = [[[0] * w for _ in range(h)] for _ in range(co)]
        return st

    def _neurons(self, c):
        """Every output neuron (o, yy, xx) in update order, as three int arrays."""
        co, h, w = c.output_shape
        if self.pos_major:
            order = [(o, yy, xx) for yy in range(h) for xx in range(w) for o in range(co)]
        else:
            order = [(o, yy, xx) for o in range(co) for yy in range(h) for xx in range(w)]
        return tuple(np.asarray(v, dtype=np.int64) for v in zip(*order)) if order else ((),) * 3

    def _apply(self, cid, o, yy, xx, amount):
        """Add ``amount`` to one neuron, return how many spikes it emits."""
        c = self.cores[cid]
        v = self.state[cid][o][yy][xx] + amount
        if self.saturate:
            v = min(max(v, S_MIN), S_MAX)
        else:
            while v > S_MAX:
                v -= 65536
            while v < S_MIN:
                v += 65536
        n = 0
        if v >= c.threshold_high:
            n = (v // c.threshold_high) if (self.multi and c.threshold_high > 0) else 1
            v = 0 if c.reset_mode == "zero" else v - n * c.threshold_high
        v = max(v, c.threshold_low)
        self.state[cid][o][yy][xx] = v
        return n

    def _update(self, cid, ch, y, x):
        """One event into core ``cid``: returns the spikes [(c, y, x)] (copies for multi)."""
        c = self.cores[cid]
        k = c.kernel_size
        sy, sx = c.stride
        py, px = c.padding
        os_, ys, xs = self._enum[cid]
        ky = y - (ys * sy - py)
        kx = x - (xs * sx - px)
        hits = np.flatnonzero((ky >= 0) & (ky < k) & (kx >= 0) & (kx < k))  # enumeration order kept
        spikes = []
        for i in hits.tolist():
            o, yy, xx = int(os_[i]), int(ys[i]), int(xs[i])
            self.synops[cid] += 1
            n = self._apply(cid, o, yy, xx, int(c.weights[o, ch, ky[i], kx[i]]))
            spikes += [(o, yy, xx)] * n
        return spikes

    def _emit(self, cid, spikes, t):
        """Record spikes; return the list of (dest core, c, y, x) in delivery order."""
        c = self.cores[cid]
        out = []
        for (o, yy, xx) in spikes:
            self.counts[cid] += 1
            self.total += 1
            if self.total > self.max_events:
                raise SimulationError(f"reference simulator: more than {self.max_events} core events in one "
                                      "sample (runaway feedback?)")
            if cid == self.image.output_core or self.record_all:
                self.events.append((cid, xx, yy, o, t))
            for d in c.destinations:
                dst = self.cores[d.core]
                py_, px_ = yy // d.pooling, xx // d.pooling
                if py_ < dst.input_shape[1] and px_ < dst.input_shape[2]:
                    out.append((d.core, o, py_, px_))
        return out

    def _deliver_dfs(self, cid, ch, y, x, t):
        for nxt in self._emit(cid, self._update(cid, ch, y, x), t):
            self._deliver_dfs(*nxt, t)

    def _deliver_bfs(self, items, t):
        q = deque(items)
        while q:
            cid, ch, y, x = q.popleft()
            q.extend(self._emit(cid, self._update(cid, ch, y, x), t))

    def _tick(self, t):
        for cid in self.image.core_order():
            c = self.cores[cid]
            if not (c.leak_enabled and np.any(c.biases != 0)):
                continue
            spikes = []
            co, h, w = c.output_shape
            for o in range(co):
                for yy in range(h):
                    for xx in range(w):
                        spikes += [(o, yy, xx)] * self._apply(cid, o, yy, xx, int(c.biases[o]))
            items = self._emit(cid, spikes, t)
            if self.dfs:
                for it in items:
                    self._deliver_dfs(*it, t)
            else:
                self._deliver_bfs(items, t)

    def run(self, events, *, record_all=False):
        """Returns (events list of (core, x, y, feature, t), spike counts, synops)."""
        self.state = self._fresh_state()
        self.synops = {cid: 0 for cid in self.cores}
        self.counts = {cid: 0 for cid in self.cores}
        self.events = []
        self.total = 0
        self.record_all = record_all
        inp = self.image.input
        next_tick = int(events["t"][0]) + self.period if len(events) else 0
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 100_000))  # depth-first recursion on long cascades
        try:
            for ev in events:
                t = int(ev["t"])
                while next_tick <= t:
                    self._tick(next_tick)
                    next_tick += self.period
                ch = 0 if inp.merge_polarities else int(ev["p"])
                y, x = int(ev["y"]) // inp.pooling, int(ev["x"]) // inp.pooling
                if self.dfs:
                    for d in inp.destinations:
                        self._deliver_dfs(d, ch, y, x, t)
                else:
                    self._deliver_bfs([(d, ch, y, x) for d in inp.destinations], t)
        finally:
            sys.setrecursionlimit(limit)
        return self.events, self.counts, self.synops


class ReferenceBackend:
    """:class:`RefSim` as a :class:`~flexsnn.deploy.backend.Backend` (``name = "reference"``).

    Options: ``spike``, ``order``, ``update_order``, ``saturate``, ``leak_period_us`` (the
    simulator's rules, same defaults), ``record_all`` (every core's events, else the output
    core's) and ``max_events`` (core events per sample before it stops).
    """

    name = "reference"
    deterministic = True
    real_time = False

    def __init__(self, *, spike: str = "single", order: str = "depth-first", update_order: str = "channel-major",
                 saturate: bool = True, leak_period_us: int = 1000, record_all: bool = False,
                 max_events: int = 5_000_000) -> None:
        for name, value, allowed in (("spike", spike, ("single", "multi")),
                                     ("order", order, ("depth-first", "breadth-first")),
                                     ("update_order", update_order, ("channel-major", "position-major"))):
            if value not in allowed:
                raise ConfigError(name, value, " or ".join(repr(a) for a in allowed))
        if int(leak_period_us) <= 0 or int(max_events) < 1:
            raise ConfigError("leak_period_us/max_events", (leak_period_us, max_events), "integers >= 1")
        self.options = dict(spike=spike, order=order, update_order=update_order, saturate=bool(saturate),
                            leak_period_us=int(leak_period_us), max_events=int(max_events))
        self.record_all = bool(record_all)
        self.image: ChipImage | None = None
        self._sim: RefSim | None = None

    def factory_spec(self) -> tuple[str, dict]:
        """``(name, options)`` for :func:`flexsnn.deploy.factory.make_backend`."""
        return self.name, dict(self.options, record_all=self.record_all)

    def load(self, image: ChipImage) -> None:
        """Check ``image`` (:func:`check_chip_image`) and prepare the reference for it."""
        check_chip_image(image)
        self.image = image
        self._sim = RefSim(image, **self.options)
        self._sim.state = self._sim._fresh_state()

    def reset(self) -> None:
        """Zero every neuron state."""
        if self._sim is not None:
            self._sim.state = self._sim._fresh_state()

    def neuron_states(self) -> dict[int, np.ndarray]:
        """Core id -> its neuron states, int32 ``[c_out, h_out, w_out]``."""
        self._require_loaded()
        return {cid: np.asarray(v, dtype=np.int32) for cid, v in self._sim.state.items()}

    def run(self, events: np.ndarray, *, source: str = "<events>") -> RunResult:
        """Reset, check ``events`` against the image's sensor, and run them through the reference."""
        from flexsnn.data.events import validate_events

        self._require_loaded()
        image = self.image
        validate_events(events, input_sensor(image), source=source)
        rec, counts, synops = self._sim.run(events, record_all=self.record_all)
        out = np.zeros(len(rec), dtype=CHIP_EVENT_DTYPE)
        if rec:
            arr = np.asarray(rec, dtype=np.int64)
            for i, f in enumerate(("core", "x", "y", "feature", "t")):
                out[f] = arr[:, i]
        mine = out[out["core"] == image.output_core]
        n_ch = image.core(image.output_core).output_shape[0]
        channel_counts = np.bincount(mine["feature"].astype(np.int64), minlength=n_ch)[:n_ch]
        return RunResult(
            events=out, spike_counts=dict(counts), synops=dict(synops),
            class_counts=class_counts_from_channels(image, channel_counts),
            input_events=int(events.size),
            duration_us=int(events["t"][-1] - events["t"][0]) if events.size else 0,
            extras={"t0_us": int(events["t"][0]) if events.size else 0})

    def predict(self, events: np.ndarray) -> int:
        """Predicted class (arg-max of the class counts; -1 when no class spiked)."""
        return self.run(events).prediction

    def close(self) -> None:
        """Nothing to release."""
        return None

    def _require_loaded(self) -> None:
        if self._sim is None:
            raise ConfigError("image", None, "a loaded ChipImage", "call load(image) first")
