"""Dataset evaluation sharded over ``torch.distributed`` ranks, on one or many machines.

Rank ``r`` of ``W`` runs the contiguous share :func:`~flexsnn.training.distributed.shard_indices`
of the samples on its own backend (any :class:`~flexsnn.deploy.backend.Backend`: the
simulators, or one Speck2e devkit per machine) through
:func:`~flexsnn.deploy.evaluate.evaluate_dataset`. The per-sample records (index, label,
prediction, SynOps, spikes, latency) are gathered, put back in dataset order, and summarised
by the same :func:`~flexsnn.deploy.evaluate.summarise` one process uses. So accuracy, the
confusion matrix (integer counts), SynOps and latency statistics are exactly those of one
process: nothing is an average of per-rank averages. Only wall-time fields differ.

Launch (each rank loads the same chip image and dataset)::

    torchrun --nproc-per-node 2 -m flexsnn.cli -- simulate --chip m.chip --shard

Without a process group (or with one rank) :func:`evaluate_sharded` is ``evaluate_dataset``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from flexsnn.deploy.backend import Backend
from flexsnn.deploy.evaluate import EvalResult, evaluate_dataset, summarise
from flexsnn.errors import ConfigError
from flexsnn.progress import ProgressFactory

log = logging.getLogger(__name__)


class IndexedSubset:
    """The samples ``indices`` of an event dataset, as a dataset (``[i] -> dataset[indices[i]]``)
    that keeps ``.sensor``, ``.name`` and ``.labels``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.name = getattr(dataset, "name", "dataset")
        self.sensor = getattr(dataset, "sensor", None)
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else [int(labels[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def _image_fingerprint(backend: Backend) -> str:
    image = getattr(backend, "image", None)
    if image is None:
        raise ConfigError("backend", getattr(backend, "name", backend), "a loaded backend",
                          "call backend.load(chip_image) first")
    import hashlib
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = image.save(Path(tmp) / "image.chip")
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def merge_records(parts: Sequence[Sequence[dict[str, Any]]], *, n: int) -> list[dict[str, Any]]:
    """Concatenate per-rank record lists into dataset order and check that every index
    ``0 .. n-1`` occurs exactly once (raises :class:`ConfigError` otherwise)."""
    records = sorted((r for part in parts for r in part), key=lambda r: r["index"])
    got = [r["index"] for r in records]
    if got != list(range(n)):
        missing = sorted(set(range(n)) - set(got))
        raise ConfigError("sharded records", f"{len(got)} records", f"exactly one per sample 0..{n - 1}",
                          f"missing {missing[:5]}" if missing else "duplicated sample indices")
    return records


def evaluate_sharded(backend: Backend, event_dataset: Any, *, limit: int | None = None,
                     progress: ProgressFactory | None = None, workers: int = 1, chunk_size: int | None = None,
                     all_ranks: bool = False, check_image: bool = True) -> EvalResult | None:
    """Evaluate ``event_dataset`` on ``backend`` with the samples split over the ranks.

    Every rank calls it with the same (loaded) chip image and dataset.

    Args:
        backend: this rank's loaded backend.
        event_dataset: sequence of ``(events, label)`` (same on every rank).
        limit: first ``limit`` samples only.
        progress: progress factory (shown on rank 0 only, for its shard).
        workers: processes per rank (``evaluate_dataset``'s process pool).
        all_ranks: return the result on every rank (all-gather); default rank 0 only
            (gather), other ranks get None.
        check_image: verify that every rank loaded the same chip image (sha256).

    Returns:
        The :class:`EvalResult` one process would compute (``per_sample`` in dataset order;
        ``seconds`` is the wall time from the common start to the gathered result, and
        ``workers`` the total number of processes), or None on ranks other than 0 unless
        ``all_ranks``.

    Raises:
        DistributedError: ranks disagree on the sample count or the chip image.
    """
    from flexsnn import parallel as dist

    n = len(event_dataset) if limit is None else min(int(limit), len(event_dataset))
    world, rank = dist.get_world_size(), dist.get_rank()
    dist.check_agreement(n, what="the number of samples to evaluate")
    if check_image and world > 1:
        dist.check_agreement(_image_fingerprint(backend), what="the chip image (sha256)")
    mine = dist.shard_indices(n, rank=rank, world_size=world)
    dist.barrier()
    t0 = time.perf_counter()
    local = evaluate_dataset(backend, IndexedSubset(event_dataset, mine), progress=progress if rank == 0 else None,
                             workers=workers, chunk_size=chunk_size)
    records = [dict(r, index=mine[r["index"]]) for r in local.per_sample]
    parts = dist.all_gather_objects(records) if all_ranks else dist.gather_objects(records, dst=0)
    seconds = time.perf_counter() - t0
    if parts is None:
        return None
    merged = merge_records(parts, n=n)
    image = backend.image  # type: ignore[attr-defined]
    result = summarise(merged, backend=backend, dataset=getattr(event_dataset, "name", "dataset"),
                       num_classes=image.num_classes, seconds=seconds, workers=int(workers) * world)
    result.provenance["sharding"] = {"world_size": world, "workers_per_rank": int(workers),
                                     "samples_per_rank": [len(p) for p in parts],
                                     "process_group": dist.describe()}
    log.info("sharded evaluation: %d samples over %d ranks in %.2f s", n, world, seconds)
    return result


def evaluate_in_session(backend: Backend, event_dataset: Any, **kwargs: Any) -> EvalResult | None:
    """:func:`evaluate_sharded` inside the torchrun process group (joined from the
    environment and left afterwards; gloo on CPU). Returns the result on rank 0, None on the
    others. Alone (no torchrun) it is plain single-process evaluation."""
    from flexsnn import parallel as dist

    with dist.distributed_session(device="cpu"):
        return evaluate_sharded(backend, event_dataset, **kwargs)


__all__ = ["IndexedSubset", "evaluate_sharded", "evaluate_in_session", "merge_records"]
