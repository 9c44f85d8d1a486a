"""Time-binned (synchronous) backend: the chip-ready sinabs model of a ChipImage, fed T frames.

This is the synchronous reference the asynchronous simulator is compared with. From the
ChipImage alone it builds, per core, ``torch.nn.Conv2d`` with ``float(int8)`` weights (and
the biases when ``leak_enabled``), a ``sinabs.layers.IAFSqueeze`` with
``spike_threshold=threshold_high``, ``min_v_mem=threshold_low``, ``MembraneSubtract`` or
``MembraneReset`` (``reset_mode``) and ``MultiSpike`` / ``SingleSpike`` (``spike``), and a
``sinabs.layers.SumPool2d`` per pooled destination. Events become ``T`` frames with
:func:`flexsnn.data.frames.events_to_frames` (tonic's binning: counts per pixel, polarity and
bin; events past the last whole window are dropped).

Differences from the chip and from :class:`~flexsnn.deploy.async_sim.AsyncSimulator`, on
purpose (that is what a time-binned simulation is):

- all events of a bin arrive at once; a neuron is updated once per bin with the summed input,
  so it spikes (single: at most once; multi: ``v // threshold`` times) once per bin;
- the state is float32 (no 16-bit saturation);
- biases are added once per time bin, not per slow-clock tick;
- output events carry the END time of their bin (``t0 + (i+1) * window``), µs;
- cores are run in topological order (a merge sums its inputs within the bin); feedback
  (cycles) is refused.

The two backends agree exactly when every bin holds one input event and no core emits more
than one spike per bin (no two spikes in flight), see tests/test_time_binned.py.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from flexsnn.converters.chip_image import ChipImage, check_chip_image
from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.data.events import validate_events
from flexsnn.data.frames import events_to_frames
from flexsnn.deploy.async_sim import (
    SimulationError, class_counts_from_channels, default_max_events, input_sensor, memory_budget_bytes,
)
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE, RunResult
from flexsnn.errors import ConfigError

log = logging.getLogger(__name__)


def topological_cores(image: ChipImage) -> list[int]:
    """Core ids in an order where every core comes after all cores feeding it.

    Raises:
        ConfigError: the image has feedback (a cycle), which a time-binned pass cannot run.
    """
    ids = [c.core for c in image.cores]
    indeg = {i: 0 for i in ids}
    for c in image.cores:
        for d in c.destinations:
            indeg[d.core] += 1
    ready = [i for i in image.core_order() if indeg[i] == 0]
    ready += [i for i in ids if indeg[i] == 0 and i not in ready]
    order = []
    while ready:
        cid = ready.pop(0)
        order.append(cid)
        for d in image.core(cid).destinations:
            indeg[d.core] -= 1
            if indeg[d.core] == 0:
                ready.append(d.core)
    if len(order) != len(ids):
        raise ConfigError("chip image", "feedback between cores", "a feed-forward graph",
                          "use the asynchronous simulator for recurrent images")
    return order


def fanout_map(c_out: int, h_in: int, w_in: int, h_out: int, w_out: int, k: int,
               stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """SynOps one input event at ``(y, x)`` causes: ``c_out * (#rows reached) * (#cols reached)``.

    Returns int64 ``[h_in, w_in]``.
    """
    def reach(n_in, n_out, s, p):
        pos = np.arange(n_in)[:, None]
        o = np.arange(n_out)[None, :]
        kk = pos + p - o * s
        return ((kk >= 0) & (kk < k)).sum(axis=1)

    return c_out * np.outer(reach(h_in, h_out, stride[0], padding[0]),
                            reach(w_in, w_out, stride[1], padding[1])).astype(np.int64)


class TimeBinnedBackend:
    """The chip-ready sinabs model of a ChipImage run on ``T`` frames (Backend protocol).

    Args:
        T: number of time bins per sample (>= 1).
        spike: "multi" (default; sinabs' MultiSpike, as the chip-ready model is trained) or
            "single" (SingleSpike).
        batch_size: samples per forward pass in :meth:`run_batch` (fewer when a pass of
            ``batch_size`` samples would not fit in memory, see :meth:`memory_per_sample_bytes`).
        max_events: most output events one sample may produce (None: sized to this machine's
            memory, as the async simulator's guard); past it :class:`SimulationError`.
        limits: chip limits the image is checked against.

    Memory: a forward pass holds every time bin of every core at once, about
    :meth:`memory_per_sample_bytes` per sample (linear in ``T``). :meth:`load` refuses a ``T``
    for which one sample exceeds a quarter of this machine's memory (the message gives the
    estimate); otherwise batches are cut to fit.
    """

    name = "time-binned"
    deterministic = True
    real_time = False

    def __init__(self, T: int = 10, *, spike: str = "multi", batch_size: int = 50,
                 max_events: int | None = None, limits: ChipLimits = SPECK2E) -> None:
        if int(T) < 1:
            raise ConfigError("T", T, "an integer >= 1", "pass --T N with N >= 1")
        if spike not in ("single", "multi"):
            raise ConfigError("spike", spike, "'single' or 'multi'")
        if int(batch_size) < 1:
            raise ConfigError("batch_size", batch_size, "an integer >= 1")
        if max_events is not None and int(max_events) < 1:
            raise ConfigError("max_events", max_events, "an integer >= 1 (or None: sized to memory)")
        self.T, self.spike, self.batch_size, self.limits = int(T), spike, int(batch_size), limits
        self.max_events = None if max_events is None else int(max_events)
        self.image: ChipImage | None = None
        self._convs: dict = {}
        self._order: list[int] = []
        self._fanout: dict[int, np.ndarray] = {}

    def factory_spec(self) -> tuple[str, dict]:
        """``(name, options)`` for :func:`flexsnn.deploy.factory.make_backend`."""
        return self.name, {"T": self.T, "spike": self.spike, "batch_size": self.batch_size,
                           "max_events": self.max_events}

    # ---- Backend protocol -----------------------------------------------------------------
    def load(self, image: ChipImage) -> None:
        """Check ``image`` and build the per-core torch layers from its integers."""
        import torch

        check_chip_image(image, limits=self.limits)
        self._order = topological_cores(image)
        self.image = image
        self._convs = {}
        self._fanout = {}
        for c in image.cores:
            c_out, c_in, k, _ = c.weights.shape
            conv = torch.nn.Conv2d(c_in, c_out, k, stride=tuple(c.stride), padding=tuple(c.padding),
                                   bias=bool(c.leak_enabled))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(c.weights.astype(np.float32)))
                if c.leak_enabled:
                    conv.bias.copy_(torch.from_numpy(c.biases.astype(np.float32)))
            conv.requires_grad_(False)
            self._convs[c.core] = conv
            self._fanout[c.core] = fanout_map(c_out, c.input_shape[1], c.input_shape[2],
                                              c.output_shape[1], c.output_shape[2], k,
                                              tuple(c.stride), tuple(c.padding))
        per_sample, budget = self.memory_per_sample_bytes(), memory_budget_bytes() // 4
        if per_sample > budget:
            self.image = None
            raise ConfigError(
                "T", self.T, f"a T whose forward pass fits in memory: at T={self.T} one sample "
                f"needs about {per_sample / 2**30:,.1f} GiB, the budget is {budget / 2**30:,.1f} GiB "
                "(a quarter of this machine's memory)",
                f"use a smaller --T (memory grows linearly with T; T <= {max(1, self.T * budget // per_sample):,} "
                "fits) or the async backend, which needs no time bins")

    def memory_per_sample_bytes(self) -> int:
        """Estimated peak bytes of one sample in a forward pass (float32): the frames
        ``[T, C, H, W]``, and per core and time bin its input, convolution output, membrane and
        spikes (x2 for torch temporaries) and its pooled outputs."""
        image = self._require_loaded()
        per_bin = int(np.prod(image.input.shape)) * 2
        for c in image.cores:
            out = int(np.prod(c.output_shape))
            per_bin += int(np.prod(c.input_shape)) + 2 * 3 * out
            per_bin += sum(out // (d.pooling * d.pooling) for d in c.destinations)
        return 4 * self.T * per_bin

    def _samples_per_pass(self) -> int:
        """``batch_size``, or fewer so that one forward pass fits the memory budget."""
        fit = (memory_budget_bytes() // 4) // max(1, self.memory_per_sample_bytes())
        return max(1, min(self.batch_size, int(fit)))

    def reset(self) -> None:
        """Nothing persists between forward passes (fresh neuron layers every batch)."""
        return None

    def run(self, events: np.ndarray) -> RunResult:
        """Bin one sample into T frames and run it (see :meth:`run_batch`)."""
        return self.run_batch([events])[0]

    def predict(self, events: np.ndarray) -> int:
        return self.run(events).prediction

    def close(self) -> None:
        return None

    # ---- batched ----------------------------------------------------------------------------
    def frames(self, events: np.ndarray, *, source: str = "<events>") -> np.ndarray:
        """Validate ``events`` and bin them: float32 ``[T, C, H, W]`` of the input map
        (after DVS pooling and polarity merging)."""
        image = self._require_loaded()
        sensor = input_sensor(image)
        validate_events(events, sensor, source=source)
        fr = events_to_frames(events, sensor, self.T)
        if image.input.merge_polarities:
            fr = fr.sum(axis=1, keepdims=True)
        p = image.input.pooling
        if p > 1:
            t, c, h, w = fr.shape
            hh, ww = h // p, w // p
            fr = fr[:, :, :hh * p, :ww * p].reshape(t, c, hh, p, ww, p).sum(axis=(3, 5))
        return fr

    def run_batch(self, batch: Sequence[np.ndarray]) -> list[RunResult]:
        """Run several samples; forward passes of at most ``batch_size`` samples.

        Every sample is validated before anything runs (EventFormatError).
        """
        self._require_loaded()
        for i, ev in enumerate(batch):  # every sample checked before anything runs
            validate_events(ev, input_sensor(self.image), source=f"<events {i}>")
        step = self._samples_per_pass()
        out: list[RunResult] = []
        for s in range(0, len(batch), step):
            chunk = list(batch[s:s + step])
            frames = [self.frames(ev, source=f"<events {s + i}>") for i, ev in enumerate(chunk)]
            out += self._forward(np.stack(frames), chunk)
        return out

    def _forward(self, x: np.ndarray, events: list[np.ndarray]) -> list[RunResult]:
        """x: float32 ``[B, T, C, H, W]`` frames of the input map."""
        import torch
        from sinabs.activation import MembraneReset, MembraneSubtract, MultiSpike, SingleSpike
        from sinabs.layers import IAFSqueeze, SumPool2d

        image = self.image
        B, T = x.shape[:2]
        inputs: dict[int, torch.Tensor] = {}
        spikes_of: dict[int, torch.Tensor] = {}
        synops = np.zeros((B, len(image.cores)), dtype=np.int64)
        col = {cid: i for i, cid in enumerate(self._order)}
        x_t = torch.from_numpy(np.ascontiguousarray(x)).reshape(B * T, *x.shape[2:])
        for d in image.input.destinations:
            inputs[d] = x_t if d not in inputs else inputs[d] + x_t
        with torch.no_grad():
            for cid in self._order:
                c = image.core(cid)
                inp = inputs.get(cid)
                if inp is None:
                    inp = torch.zeros(B * T, *c.input_shape)
                counts = inp.reshape(B, T, *c.input_shape).sum(dim=(1, 2)).double().numpy()
                synops[:, col[cid]] = np.rint((counts * self._fanout[cid]).sum(axis=(1, 2))).astype(np.int64)
                iaf = IAFSqueeze(
                    num_timesteps=T,
                    spike_threshold=float(c.threshold_high),
                    min_v_mem=float(c.threshold_low),
                    spike_fn=MultiSpike if self.spike == "multi" else SingleSpike,
                    reset_fn=MembraneReset() if c.reset_mode == "zero" else MembraneSubtract(),
                )
                s = iaf(self._convs[cid](inp))
                spikes_of[cid] = s
                for d in c.destinations:
                    pooled = SumPool2d(d.pooling)(s) if d.pooling > 1 else s
                    inputs[d.core] = pooled if d.core not in inputs else inputs[d.core] + pooled
        return [self._result(b, spikes_of, synops[b], col, ev) for b, ev in enumerate(events)]

    def _result(self, b, spikes_of, synops_row, col, events) -> RunResult:
        image, T = self.image, self.T
        out_spikes = spikes_of[image.output_core]
        c_out, h, w = out_spikes.shape[1:]
        sp = out_spikes.reshape(-1, T, c_out, h, w)[b].round().to(dtype=torch_int64()).numpy()
        t0 = int(events["t"][0]) if events.size else 0
        window = (int(events["t"][-1]) - t0) // T if events.size else 0
        tt, cc, yy, xx = np.nonzero(sp)
        reps = sp[tt, cc, yy, xx]
        limit = self.max_events if self.max_events is not None else default_max_events()
        if int(reps.sum()) > limit:
            raise SimulationError(
                f"time-binned T={T}: the output core emitted {int(reps.sum()):,} spikes in one sample, "
                f"more than max_events={limit:,} output events (about {int(reps.sum()) * 16 / 2**30:,.1f} "
                "GiB): the activity runs away (thresholds too low?); check the chip image's "
                "thresholds, or raise --max-events if the memory is there")
        ev_out = np.empty(int(reps.sum()), dtype=CHIP_EVENT_DTYPE)
        ev_out["core"] = image.output_core
        ev_out["x"] = np.repeat(xx, reps)
        ev_out["y"] = np.repeat(yy, reps)
        ev_out["feature"] = np.repeat(cc, reps)
        ev_out["t"] = t0 + (np.repeat(tt, reps) + 1) * window
        counts = {cid: int(round(float(s.reshape(-1, T, *s.shape[1:])[b].sum())))
                  for cid, s in spikes_of.items()}
        per_bin = {cid: s.reshape(-1, T, *s.shape[1:])[b].sum(dim=(1, 2, 3)).round().long().tolist()
                   for cid, s in spikes_of.items()}
        return RunResult(
            events=ev_out,
            spike_counts=counts,
            synops={cid: int(synops_row[col[cid]]) for cid in self._order},
            class_counts=class_counts_from_channels(image, sp.sum(axis=(0, 2, 3))),
            input_events=int(events.size),
            duration_us=int(events["t"][-1] - events["t"][0]) if events.size else 0,
            extras={"T": T, "window_us": window, "t0_us": t0, "spikes_per_bin": per_bin},
        )

    def _require_loaded(self) -> ChipImage:
        if self.image is None:
            raise ConfigError("image", None, "a loaded ChipImage", "call load(image) first")
        return self.image


def torch_int64():
    import torch

    return torch.int64
