"""Early stop on the event-driven simulator: stop consuming input events once the output
spike-count margin (top class minus runner-up) reaches ``k``.

How the stop is found and taken
-------------------------------
The simulator handles each input event, and everything it causes, before the next one, and
timestamps play no part in the arithmetic (only in the leak's slow clock). So the decision
"after input event ``i``, is the margin >= k?" depends only on the output events caused by
events ``0..i``. :func:`output_trajectory` runs the sample once with every timestamp replaced
by its event index: each output event then carries the index of the input event that caused
it, which gives the class counts after every prefix (what an online observer of the output
stream sees). The stop point ``n_stop`` is the first prefix whose margin reaches ``k`` (all
events when it never does). :func:`run_early_stop` then really runs only the first ``n_stop``
events (the original ones) on the backend, which gives the decision, the SynOps spent and the
consumed time span; it checks that this prefix run reproduces the trajectory's counts.

Images whose cores leak (biases on the slow clock) are refused: there the timestamps matter
and the index trick would change the computation.

Reported per sample: ``events_consumed`` (a prefix length), ``fraction_of_duration``
(``(t[n_stop-1] - t[0]) / (t[-1] - t[0])``), ``fraction_of_events`` and the SynOps of the prefix
against the full run's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from flexsnn.data.events import make_events
from flexsnn.deploy.backend import RunResult
from flexsnn.errors import ConfigError, FlexsnnError
from flexsnn.progress import ProgressFactory, null_progress

__all__ = [
    "Trajectory",
    "EarlyStopResult",
    "EarlyStopPoint",
    "margin",
    "output_trajectory",
    "stop_index",
    "run_early_stop",
    "early_stop_sweep",
]


def margin(class_counts: np.ndarray) -> int:
    """Top class count minus the runner-up's (the top count itself with one class; 0 if empty)."""
    c = np.asarray(class_counts, dtype=np.int64).ravel()
    if c.size == 0:
        return 0
    if c.size == 1:
        return int(c[0])
    top2 = np.partition(c, -2)[-2:]
    return int(top2[1] - top2[0])


@dataclass(frozen=True)
class Trajectory:
    """Class counts after every input prefix of one sample.

    Attributes:
        n_events: input events of the sample.
        event_index: int64 ``[M]``: input event that caused each output spike (sorted).
        event_class: int64 ``[M]``: its class (-1 for channels no class reads).
        num_classes: classes.
        full: the full run's :class:`RunResult` (on index-stamped events).
    """

    n_events: int
    event_index: np.ndarray
    event_class: np.ndarray
    num_classes: int
    full: RunResult

    def counts_after(self, n: int) -> np.ndarray:
        """Class counts int64 ``[num_classes]`` after the first ``n`` input events."""
        sel = (self.event_index < n) & (self.event_class >= 0)
        return np.bincount(self.event_class[sel], minlength=self.num_classes).astype(np.int64)

    def margins(self) -> tuple[np.ndarray, np.ndarray]:
        """``(prefix_lengths, margin)``: the margin right after each input event that caused an
        output spike of a class (the margin changes only there), prefix lengths ascending."""
        sel = self.event_class >= 0
        idx, cls = self.event_index[sel], self.event_class[sel]
        if idx.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        lengths, margins = [], []
        for j in range(idx.size):
            counts[cls[j]] += 1
            if j + 1 == idx.size or idx[j + 1] != idx[j]:
                lengths.append(int(idx[j]) + 1)
                margins.append(margin(counts))
        return np.asarray(lengths, np.int64), np.asarray(margins, np.int64)


def _check_backend(backend) -> None:
    image = getattr(backend, "image", None)
    if image is None:
        raise ConfigError("backend", getattr(backend, "name", backend), "a backend with a loaded ChipImage",
                          "call backend.load(image) first")
    if not getattr(backend, "deterministic", False) or getattr(backend, "real_time", True):
        raise ConfigError("backend", getattr(backend, "name", backend), "a deterministic, not real-time backend",
                          "early stop replays prefixes; use the async simulator")
    leaky = [c.core for c in image.cores if c.leak_enabled and np.any(np.asarray(c.biases) != 0)]
    if leaky:
        raise ConfigError("image.cores.leak_enabled", leaky, "no leaking core for early stop",
                          "the leak's slow clock depends on timestamps; export without biases")


def _channel_to_class(image) -> np.ndarray:
    n_ch = int(image.core(image.output_core).output_shape[0])
    mapping = np.full(n_ch, -1, dtype=np.int64)
    if image.readout is None:
        mapping[:] = np.arange(n_ch)
    else:
        for k in range(image.readout.num_classes):
            mapping[image.readout.channel_of_class(k)] = k
    return mapping


def output_trajectory(backend, events: np.ndarray) -> Trajectory:
    """Run ``events`` once with timestamps replaced by event indices (see module docstring).

    Args:
        backend: a loaded deterministic simulator (:class:`~flexsnn.deploy.async_sim.AsyncSimulator`).
        events: one sample, EVENT_DTYPE, sorted by t.
    """
    _check_backend(backend)
    image = backend.image
    stamped = make_events(events["x"], events["y"], events["p"], np.arange(events.size, dtype=np.int64))
    full = backend.run(stamped)
    out = full.events[full.events["core"] == image.output_core]
    mapping = _channel_to_class(image)
    feat = out["feature"].astype(np.int64)
    cls = np.where((feat >= 0) & (feat < mapping.size), mapping[np.clip(feat, 0, mapping.size - 1)], -1)
    num_classes = int(np.asarray(full.class_counts).size)
    return Trajectory(n_events=int(events.size), event_index=out["t"].astype(np.int64), event_class=cls,
                      num_classes=num_classes, full=full)


def stop_index(traj: Trajectory, k: int) -> int:
    """Events to consume: the shortest prefix whose margin is ``>= k``, else all of them.
    ``k <= 0`` stops before any event (prefix 0)."""
    if k <= 0:
        return 0
    lengths, margins = traj.margins()
    hit = np.flatnonzero(margins >= k)
    return int(lengths[hit[0]]) if hit.size else traj.n_events


@dataclass(frozen=True)
class EarlyStopResult:
    """One sample under early stop with margin ``k``.

    Attributes:
        k: margin threshold (spikes).
        prediction: class decided from the consumed prefix (-1: no class spiked).
        full_prediction: the full run's class.
        events_consumed, n_events: prefix length and sample length.
        stopped_early: margin reached before the last event.
        fraction_of_duration: consumed time span over the sample's span (1.0 when all consumed).
        fraction_of_events: ``events_consumed / n_events``.
        synops, full_synops: SynOps of the prefix and of the whole sample.
        class_counts: int64 ``[num_classes]`` after the prefix.
    """

    k: int
    prediction: int
    full_prediction: int
    events_consumed: int
    n_events: int
    stopped_early: bool
    fraction_of_duration: float
    fraction_of_events: float
    synops: int
    full_synops: int
    class_counts: np.ndarray

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_counts"] = [int(v) for v in self.class_counts]
        return d


def _duration_fraction(events: np.ndarray, n: int) -> float:
    if events.size == 0 or n >= events.size:
        return 1.0
    if n == 0:
        return 0.0
    span = int(events["t"][-1]) - int(events["t"][0])
    return 1.0 if span <= 0 else (int(events["t"][n - 1]) - int(events["t"][0])) / span


def _prefix_result(backend, events: np.ndarray, traj: Trajectory, n: int, k: int,
                   cache: Optional[dict] = None) -> EarlyStopResult:
    if cache is not None and n in cache:
        res = cache[n]
    else:
        res = backend.run(events[:n])
        if cache is not None:
            cache[n] = res
    expect = traj.counts_after(n)
    if not np.array_equal(np.asarray(res.class_counts, dtype=np.int64), expect):
        raise FlexsnnError(f"early stop: running the first {n} events gave class counts "
                           f"{np.asarray(res.class_counts).tolist()} but the index-stamped full run "
                           f"{expect.tolist()}; the backend is not causal/deterministic")
    n_ev = int(events.size)
    return EarlyStopResult(
        k=int(k), prediction=res.prediction, full_prediction=traj.full.prediction, events_consumed=int(n),
        n_events=n_ev, stopped_early=n < n_ev, fraction_of_duration=_duration_fraction(events, n),
        fraction_of_events=(n / n_ev) if n_ev else 1.0, synops=res.total_synops,
        full_synops=traj.full.total_synops, class_counts=np.asarray(res.class_counts, dtype=np.int64))


def run_early_stop(backend, events: np.ndarray, k: int) -> EarlyStopResult:
    """Run one sample, stopping once the output margin reaches ``k`` spikes.

    Args:
        backend: loaded async simulator (deterministic, no leaking core).
        events: EVENT_DTYPE, sorted by t (µs).
        k: margin threshold in spikes (>= 1 for a meaningful stop).

    Returns:
        :class:`EarlyStopResult`; with ``k`` never reached it consumes every event and its
        prediction is the full run's.
    """
    traj = output_trajectory(backend, events)
    return _prefix_result(backend, events, traj, stop_index(traj, k), k)


@dataclass(frozen=True)
class EarlyStopPoint:
    """Dataset summary at one ``k``: accuracy, mean fractions of duration and events consumed,
    ``synops_fraction`` = total prefix SynOps / total full SynOps, mean SynOps per sample,
    fraction of samples that stopped early, agreement with the full run's decisions."""

    k: int
    accuracy: float
    fraction_of_duration: float
    fraction_of_events: float
    synops_fraction: float
    mean_synops: float
    stopped_early: float
    agreement_with_full: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def early_stop_sweep(backend, dataset, ks: Sequence[int], *, limit: Optional[int] = None,
                     progress: Optional[ProgressFactory] = None) -> tuple[list[EarlyStopPoint], dict]:
    """Accuracy vs consumed fraction and SynOps for each ``k`` over an event dataset.

    Args:
        backend: loaded async simulator.
        dataset: sequence of ``(events, label)``.
        ks: margins to sweep.
        limit: first ``limit`` samples.

    Returns:
        ``(points, full)``: one :class:`EarlyStopPoint` per k, and the full-run summary
        ``{"accuracy", "mean_synops", "n"}``.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    per_k = {int(k): [] for k in ks}
    full_correct, full_synops, labels = 0, 0, []
    bar = (progress or null_progress)(total=n, desc="early stop")
    try:
        for i in range(n):
            events, label = dataset[i]
            labels.append(int(label))
            traj = output_trajectory(backend, events)
            full_correct += int(traj.full.prediction == int(label))
            full_synops += traj.full.total_synops
            # the index-stamped full run computes what the original does (timestamps only stamp)
            cache: dict = {int(events.size): traj.full}
            for k in per_k:
                per_k[k].append(_prefix_result(backend, events, traj, stop_index(traj, k), k, cache))
            bar.update(1)
    finally:
        bar.close()
    points = []
    for k, results in per_k.items():
        total_full = sum(r.full_synops for r in results)
        points.append(EarlyStopPoint(
            k=k,
            accuracy=float(np.mean([r.prediction == y for r, y in zip(results, labels)])) if n else 0.0,
            fraction_of_duration=float(np.mean([r.fraction_of_duration for r in results])) if n else 0.0,
            fraction_of_events=float(np.mean([r.fraction_of_events for r in results])) if n else 0.0,
            synops_fraction=(sum(r.synops for r in results) / total_full) if total_full else 1.0,
            mean_synops=float(np.mean([r.synops for r in results])) if n else 0.0,
            stopped_early=float(np.mean([r.stopped_early for r in results])) if n else 0.0,
            agreement_with_full=float(np.mean([r.prediction == r.full_prediction for r in results])) if n else 0.0,
            n=n))
    return points, {"accuracy": full_correct / n if n else 0.0, "mean_synops": full_synops / n if n else 0.0, "n": n}
