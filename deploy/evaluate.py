"""Evaluate any backend on an event dataset: :func:`evaluate_dataset` -> :class:`EvalResult`.

Per sample the backend's :class:`~flexsnn.deploy.backend.RunResult` gives the prediction
(arg-max of the class counts; -1 when no class spiked), SynOps and spike counts; the
latency-to-decision is computed from the output core's timed events (see
:func:`decision_latency_us`). With ``workers > 1`` (capped at the number of samples and of CPU
cores) ``workers - 1`` processes are forked and the calling process works too: they inherit
the loaded backend and the dataset (copy-on-write, nothing big is pickled; with
``keep_workers`` they stay for the next call on the same backend, image and dataset), take
chunks of sample indices from a shared counter as they finish (guided: smaller towards the
end, so that the processes finish together), and send back only their per-sample records;
results are put back in dataset order, so deterministic backends give the same result for
any number of workers.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numba import njit

from flexsnn.converters.chip_image import ChipImage
from flexsnn.deploy.backend import Backend, RunResult
from flexsnn.errors import ConfigError, FlexsnnError
from flexsnn.io_utils import atomic_write_json, provenance, to_json
from flexsnn.progress import ProgressFactory, null_progress

log = logging.getLogger(__name__)


def class_of_channel(image: ChipImage) -> dict[int, int]:
    """Output-core channel -> class (readout mapping, else identity)."""
    if image.readout is None:
        return {c: c for c in range(image.core(image.output_core).output_shape[0])}
    return {image.readout.channel_of_class(k): k for k in range(image.readout.num_classes)}


def decision_latency_us(result: RunResult, image: ChipImage) -> int | None:
    """Input time (µs after the first input event) after which the arg-max no longer changes.

    The class counts are accumulated over the output core's events in emission order; after
    each event the arg-max (lowest class on ties) is taken. The latency is the timestamp of
    the event after which the arg-max stays equal to the final one, minus the first input
    event's time. ``None`` when no class ever spiked (no decision).

    The counts are followed event by event in compiled code (:func:`_last_argmax_change`), so a
    busy output core costs no Python loop per spike.
    """
    ev = result.events
    if ev.size == 0:
        return None
    lut_of = class_of_channel(image)
    lut = np.full(max([*lut_of, -1]) + 1, -1, dtype=np.int64)
    for ch, k in lut_of.items():
        lut[ch] = k
    t_change = _last_argmax_change(ev["core"], ev["feature"], ev["t"], int(image.output_core), lut,
                                   int(image.num_classes))
    if t_change < 0:
        return None
    return int(t_change) - int(result.extras.get("t0_us", 0))


@njit(cache=True)
def _last_argmax_change(core, feature, t, out_core, lut, n_cls):
    """Time of the last output-core event (``core == out_core``, class ``lut[feature]``,
    events of channels without a class skipped) after which the arg-max (lowest class on
    ties) of the running class counts changed; -1 when no event has a class."""
    counts = np.zeros(n_cls, dtype=np.int64)
    best = -1
    t_change = -1
    for e in range(core.shape[0]):
        f = feature[e]
        if core[e] != out_core or f < 0 or f >= lut.shape[0] or lut[f] < 0:
            continue
        c = lut[f]
        counts[c] += 1
        # only class c grew: it becomes the arg-max when it passes the leader, or ties it
        # with a lower index
        if best < 0 or (c != best and (counts[c] > counts[best] or (counts[c] == counts[best] and c < best))):
            best = c
            t_change = t[e]
    return t_change


@dataclass
class EvalResult:
    """Result of :func:`evaluate_dataset`.

    Attributes:
        backend, backend_options: which backend, with which options.
        dataset: dataset name; samples: number evaluated; num_classes.
        accuracy: fraction correct (a sample with no output spike counts as wrong).
        confusion: int ``[num_classes, num_classes]``, rows = label, columns = prediction
            (samples without a decision are not in it, see ``no_decision``).
        no_decision: samples where no class spiked.
        synops_mean, latency_us_mean, latency_us_median: over samples (latency over samples
            with a decision; None if none).
        spikes_mean: core id -> mean spikes per sample.
        seconds, samples_per_s, workers: wall time of the evaluation.
        per_sample: list of {index, label, prediction, synops, latency_us, input_events,
            duration_us}.
    """

    backend: str
    backend_options: dict[str, Any]
    dataset: str
    samples: int
    num_classes: int
    accuracy: float
    confusion: list[list[int]]
    no_decision: int
    synops_mean: float
    latency_us_mean: float | None
    latency_us_median: float | None
    spikes_mean: dict[int, float]
    seconds: float
    samples_per_s: float
    workers: int
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return np.asarray([s["prediction"] for s in self.per_sample], dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s["label"] for s in self.per_sample], dtype=np.int64)

    def to_json(self) -> str:
        """JSON text (sorted keys, indented)."""
        return to_json(asdict(self))

    def write(self, path: str | Path) -> Path:
        """Write atomically as JSON to ``path``."""
        return atomic_write_json(path, asdict(self))


def _sample_record(index: int, label: int, result: RunResult, image: ChipImage) -> dict[str, Any]:
    return {
        "index": int(index), "label": int(label), "prediction": int(result.prediction),
        "synops": int(result.total_synops), "latency_us": decision_latency_us(result, image),
        "input_events": int(result.input_events), "duration_us": int(result.duration_us),
        "spikes": {int(k): int(v) for k, v in result.spike_counts.items()},
    }


def _run_indices(backend: Backend, image: ChipImage, dataset, indices: Sequence[int],
                 on_done=None) -> list[dict[str, Any]]:
    """Run ``indices`` of ``dataset`` on ``backend`` (batched when it has ``run_batch``)."""
    out = []
    batch = int(getattr(backend, "batch_size", 1)) if hasattr(backend, "run_batch") else 1
    for s in range(0, len(indices), batch):
        idx = list(indices[s:s + batch])
        items = [dataset[i] for i in idx]
        if batch > 1:
            results = backend.run_batch([ev for ev, _ in items])
        else:
            results = [backend.run(items[0][0])]
        for i, (_, label), r in zip(idx, items, results):
            out.append(_sample_record(i, label, r, image))
        if on_done is not None:
            on_done(len(idx))
    return out


# ---- worker processes ------------------------------------------------------------------------
class WorkerError(FlexsnnError):
    """A worker process failed without a picklable error (its traceback is in the message)."""


def effective_workers(workers: int, n_samples: int) -> int:
    """``workers`` capped at the number of samples and of CPU cores (at least 1)."""
    return max(1, min(int(workers), int(n_samples), os.cpu_count() or 1))


def _chunks(indices: list[int], workers: int, chunk_size: int | None) -> list[list[int]]:
    """``indices`` cut into the chunks the workers take in turn: ``chunk_size`` each if given,
    else guided: up to 16 while much is left, then shrinking with what is left (a quarter of
    one worker's share) down to 1, so that the workers finish within about one sample of
    each other."""
    if chunk_size is not None:
        size = max(1, int(chunk_size))
        return [indices[i:i + size] for i in range(0, len(indices), size)]
    chunks, i = [], 0
    while i < len(indices):
        size = max(1, min(16, (len(indices) - i) // (4 * workers)))
        chunks.append(indices[i:i + size])
        i += size
    return chunks


def _take_chunks(backend, image, dataset, chunks, counter, done, records, on_chunk=None) -> None:
    """Run chunks taken from the shared ``counter`` until none is left (records appended)."""
    while True:
        with counter.get_lock():
            c = counter.value
            counter.value += 1
        if c >= len(chunks):
            return
        records += _run_indices(backend, image, dataset, chunks[c])
        with done.get_lock():
            done.value += len(chunks[c])
        if on_chunk is not None:
            on_chunk()


def _child(conn, backend, image, dataset, counter, done) -> None:
    """Body of a forked worker: for each ``("run", chunks)`` received, take chunks and send
    ``("ok", records)`` or ``("error", exc)``; stop on ``("stop",)`` or a closed pipe."""
    if "torch" in sys.modules:  # one intra-op thread per process: the processes are the parallelism
        sys.modules["torch"].set_num_threads(1)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            return
        try:
            records: list[dict[str, Any]] = []
            _take_chunks(backend, image, dataset, msg[1], counter, done, records)
            conn.send(("ok", records))
        except BaseException as exc:  # reported to the parent, which raises it
            try:
                conn.send(("error", exc))
            except Exception:
                conn.send(("error", WorkerError(traceback.format_exc())))


class _WorkerPool:
    """``workers - 1`` forked processes that run chunks on request; with ``keep_workers`` kept
    between :func:`evaluate_dataset` calls on the same backend, image and dataset objects (a
    fork and an exit of a process holding torch cost tens of ms each, a few % of a 300-sample
    evaluation). They inherit all three at the fork, so a call with any other object, or a
    backend that loaded another image, starts a new pool."""

    def __init__(self, backend, image, dataset, workers: int) -> None:
        ctx = mp.get_context("fork")
        self.key = (backend, image, dataset, workers)  # held, so that identities stay unique
        self.counter, self.done = ctx.Value("q", 0), ctx.Value("q", 0)
        self.procs, self.conns = [], []
        # objects that exist now are left out of the garbage collector's scans (in the children
        # a full collection would otherwise write to, and so copy, every page of the heap)
        gc.freeze()
        try:
            for _ in range(workers - 1):
                mine, theirs = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_child, args=(theirs, backend, image, dataset, self.counter,
                                                     self.done), daemon=True)
                p.start()
                theirs.close()
                self.procs.append(p)
                self.conns.append(mine)
        finally:
            gc.unfreeze()

    def serves(self, backend, image, dataset, workers: int) -> bool:
        return all(a is b for a, b in zip(self.key[:3], (backend, image, dataset))) and \
            self.key[3] == workers and all(p.is_alive() for p in self.procs)

    def run(self, chunks: list[list[int]], bar) -> list[dict[str, Any]]:
        """All ``chunks`` over the workers and this process; records unordered."""
        backend, image, dataset, _ = self.key
        self.counter.value = 0
        self.done.value = 0
        for conn in self.conns:
            conn.send(("run", chunks))
        records: list[dict[str, Any]] = []
        shown = [0]

        def progress() -> None:
            now = self.done.value
            bar.update(now - shown[0])
            shown[0] = now

        _take_chunks(backend, image, dataset, chunks, self.counter, self.done, records, on_chunk=progress)
        for conn, p in zip(self.conns, self.procs):
            try:
                status, payload = conn.recv()
            except EOFError:
                p.join()
                raise WorkerError(f"a worker process died (exit code {p.exitcode}) before "
                                  "reporting; out of memory?") from None
            if status != "ok":
                raise payload
            records += payload
            progress()
        return records

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
                conn.close()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join()


_POOL: _WorkerPool | None = None


def _close_pool() -> None:
    global _POOL
    if _POOL is not None:
        pool, _POOL = _POOL, None
        pool.close()


atexit.register(_close_pool)


def _run_forked(backend, image, dataset, indices: list[int], workers: int, chunk_size: int | None,
                bar, keep: bool = False) -> list[dict[str, Any]]:
    """``indices`` over this process and ``workers - 1`` forked ones (with ``keep``, kept for
    the next call on the same objects, :class:`_WorkerPool`); records in index order."""
    global _POOL
    if _POOL is None or not _POOL.serves(backend, image, dataset, workers):
        _close_pool()
        _POOL = _WorkerPool(backend, image, dataset, workers)
    try:
        records = _POOL.run(_chunks(indices, workers, chunk_size), bar)
    except BaseException:
        _close_pool()  # a worker may be mid-task or gone: never reuse this pool
        raise
    if not keep:
        _close_pool()
    records.sort(key=lambda r: r["index"])
    return records


def check_sensor_matches(image: ChipImage, sensor, *, dataset: str = "dataset") -> None:
    """Refuse a dataset whose sensor (width x height) is not the one the image's input expects
    (``input.shape`` x ``input.pooling``): e.g. 34x34 N-MNIST into an image whose
    ``input.pooling = 2`` makes it expect 68x68 would land in one quarter of every map and
    classify nothing, silently. ``sensor=None`` (a plain list of samples) is not checked."""
    if sensor is None:
        return
    from flexsnn.deploy.async_sim import input_sensor

    want = input_sensor(image)
    if (int(sensor.width), int(sensor.height)) != (want.width, want.height):
        _, h, w = image.input.shape
        raise ConfigError(f"{dataset} sensor", f"{sensor.width}x{sensor.height}",
                          f"the chip image's input {want.width}x{want.height} (input.shape {w}x{h} "
                          f"x input.pooling {image.input.pooling})",
                          "use the dataset the image was exported for, or export the image for this sensor")


def evaluate_dataset(backend: Backend, event_dataset, *, limit: int | None = None,
                     progress: ProgressFactory | None = None, workers: int = 1,
                     chunk_size: int | None = None, keep_workers: bool = False) -> EvalResult:
    """Run every sample of ``event_dataset`` (a sequence of ``(events, label)``) on a loaded
    ``backend`` and summarise accuracy, confusion, latency-to-decision and SynOps.

    Args:
        backend: a loaded backend (has ``.image``); for ``workers > 1`` deterministic and
            not real-time (forked workers inherit it as it is).
        event_dataset: e.g. :func:`flexsnn.data.registry.load_event_dataset`'s result.
        limit: the first ``limit`` samples only.
        progress: progress factory (one update per sample).
        workers: processes including this one (1 = in this process only); capped at the
            number of samples and of CPU cores (:func:`effective_workers`, recorded in the
            result). Samples are handed out in chunks of ``chunk_size`` (default: guided, at
            most 16 samples, shrinking to 1 towards the end, :func:`_chunks`); results are
            put back in dataset order.
        keep_workers: keep the forked processes for the next call with the same backend, image
            and dataset objects (saves a fork and an exit, tens of ms each, per call: for
            repeated evaluations). They hold the backend and dataset as they were at the fork:
            pass a new dataset object after changing one in place.

    Raises:
        ConfigError: unloaded backend, bad ``workers``, or several workers for a real-time
            (hardware) backend.
    """
    image: ChipImage | None = getattr(backend, "image", None)
    if image is None:
        raise ConfigError("backend", getattr(backend, "name", backend), "a loaded backend",
                          "call backend.load(chip_image) first")
    if int(workers) < 1:
        raise ConfigError("workers", workers, "an integer >= 1")
    check_sensor_matches(image, getattr(event_dataset, "sensor", None),
                         dataset=getattr(event_dataset, "name", "dataset"))
    n = len(event_dataset) if limit is None else min(int(limit), len(event_dataset))
    indices = list(range(n))
    used = effective_workers(workers, n)
    if used < int(workers):
        log.info("workers: %d -> %d (%d samples, %d CPU cores)", int(workers), used, n, os.cpu_count() or 1)
    if used > 1 and (not getattr(backend, "deterministic", False) or getattr(backend, "real_time", False)):
        raise ConfigError("workers", workers, "1 for a real-time/hardware backend")
    bar = (progress or null_progress)(total=n, desc=f"{backend.name} on "
                                      f"{getattr(event_dataset, 'name', 'dataset')}")
    t_start = time.perf_counter()
    if used == 1:
        records = _run_indices(backend, image, event_dataset, indices, on_done=bar.update)
    else:
        records = _run_forked(backend, image, event_dataset, indices, used, chunk_size, bar,
                              keep=keep_workers)
    seconds = time.perf_counter() - t_start
    bar.close()
    return summarise(records, backend=backend, dataset=getattr(event_dataset, "name", "dataset"),
                     num_classes=image.num_classes, seconds=seconds, workers=used)


def summarise(records: list[dict[str, Any]], *, backend: Backend, dataset: str, num_classes: int,
              seconds: float, workers: int) -> EvalResult:
    """Build an :class:`EvalResult` from per-sample records."""
    n = len(records)
    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    preds = np.asarray([r["prediction"] for r in records], dtype=np.int64)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for y, p in zip(labels, preds):
        if 0 <= p < num_classes and 0 <= y < num_classes:
            conf[y, p] += 1
    lat = [r["latency_us"] for r in records if r["latency_us"] is not None]
    cores = sorted({c for r in records for c in r["spikes"]})
    spec = backend.factory_spec() if hasattr(backend, "factory_spec") else (backend.name, {})
    return EvalResult(
        backend=backend.name, backend_options=dict(spec[1]), dataset=dataset, samples=n,
        num_classes=num_classes,
        accuracy=float((labels == preds).mean()) if n else 0.0,
        confusion=conf.tolist(), no_decision=int((preds < 0).sum()),
        synops_mean=float(np.mean([r["synops"] for r in records])) if n else 0.0,
        latency_us_mean=float(np.mean(lat)) if lat else None,
        latency_us_median=float(np.median(lat)) if lat else None,
        spikes_mean={c: float(np.mean([r["spikes"].get(c, 0) for r in records])) for c in cores},
        seconds=float(seconds), samples_per_s=float(n / seconds) if seconds > 0 else 0.0,
        workers=workers, per_sample=records, provenance=provenance(None),
    )
