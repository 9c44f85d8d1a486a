"""Evaluate any backend on an event dataset: :func:`evaluate_dataset` -> :class:`EvalResult`.

Per sample the backend's :class:`~flexsnn.deploy.backend.RunResult` gives the prediction
(arg-max of the class counts; -1 when no class spiked), SynOps and spike counts; the
latency-to-decision is computed from the output core's timed events (see
:func:`decision_latency_us`). With ``workers > 1`` samples are spread over a process pool
(fork): each worker rebuilds the backend from ``backend.factory_spec()`` and loads the same
ChipImage, so deterministic backends give the same result for any number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flexsnn.converters.chip_image import ChipImage
from flexsnn.deploy.backend import Backend, RunResult
from flexsnn.errors import ConfigError
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
    """
    ch2cls = class_of_channel(image)
    ev = result.events[result.events["core"] == image.output_core]
    counts = np.zeros(image.num_classes, dtype=np.int64)
    best = -1
    t_change: int | None = None
    for f, t in zip(ev["feature"].tolist(), ev["t"].tolist()):
        k = ch2cls.get(int(f))
        if k is None:
            continue
        counts[k] += 1
        new = int(np.argmax(counts))
        if new != best:
            best, t_change = new, int(t)
    if t_change is None:
        return None
    t0 = int(result.extras.get("t0_us", 0))
    return t_change - t0


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


# ---- process pool ----------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(spec: tuple[str, dict], image: ChipImage, dataset) -> None:
    from flexsnn.deploy.factory import make_backend

    name, options = spec
    _WORKER["backend"] = make_backend(name, image=image, **options)
    _WORKER["image"] = image
    _WORKER["dataset"] = dataset


def _worker_run(indices: list[int]) -> list[dict[str, Any]]:
    return _run_indices(_WORKER["backend"], _WORKER["image"], _WORKER["dataset"], indices)


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
                     chunk_size: int = 8) -> EvalResult:
    """Run every sample of ``event_dataset`` (a sequence of ``(events, label)``) on a loaded
    ``backend`` and summarise accuracy, confusion, latency-to-decision and SynOps.

    Args:
        backend: a loaded backend (has ``.image``); for ``workers > 1`` it must provide
            ``factory_spec()`` (the async and time-binned backends do).
        event_dataset: e.g. :func:`flexsnn.data.registry.load_event_dataset`'s result.
        limit: the first ``limit`` samples only.
        progress: progress factory (one update per sample).
        workers: processes (1 = in this process). Samples are handed out in chunks of
            ``chunk_size``; results are put back in dataset order.

    Raises:
        ConfigError: unloaded backend, bad ``workers``, or a multi-process request for a
            backend that cannot be rebuilt in a worker.
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
    bar = (progress or null_progress)(total=n, desc=f"{backend.name} on "
                                      f"{getattr(event_dataset, 'name', 'dataset')}")
    t_start = time.perf_counter()
    if workers == 1 or n <= 1:
        records = _run_indices(backend, image, event_dataset, indices, on_done=bar.update)
    else:
        if not hasattr(backend, "factory_spec"):
            raise ConfigError("workers", workers, "1 for this backend",
                              f"backend {backend.name!r} cannot be rebuilt in a worker process")
        if not getattr(backend, "deterministic", False) or getattr(backend, "real_time", False):
            raise ConfigError("workers", workers, "1 for a real-time/hardware backend")
        chunks = [indices[i:i + chunk_size] for i in range(0, n, chunk_size)]
        ctx = mp.get_context("fork")
        records = []
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx, initializer=_worker_init,
                                 initargs=(backend.factory_spec(), image, event_dataset)) as pool:
            for part in pool.map(_worker_run, chunks):
                records += part
                bar.update(len(part))
    seconds = time.perf_counter() - t_start
    bar.close()
    return summarise(records, backend=backend, dataset=getattr(event_dataset, "name", "dataset"),
                     num_classes=image.num_classes, seconds=seconds, workers=int(workers))


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
