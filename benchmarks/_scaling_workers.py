"""Per-rank bodies of benchmarks/scaling.py (a module of their own so that processes started
with ``spawn`` can import them)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class EventList(list):
    """Recordings held in memory (file reading is not timed): list of (events, label)."""

    def __init__(self, items, sensor, name):
        super().__init__(items)
        self.sensor, self.name = sensor, name
        self.labels = np.asarray([lab for _, lab in items], dtype=np.int64)


def load_samples(data: dict[str, Any], split: str, n: int) -> EventList:
    """``n`` recordings of ``data`` (``{"dataset", "root", "seed"}``) in memory."""
    from flexsnn.data.registry import load_event_dataset

    ds = load_event_dataset(data["dataset"], split=split, root=data.get("root"), seed=data.get("seed", 0),
                            limit=n)
    return EventList([ds[i] for i in range(len(ds))], ds.sensor, ds.name)


def train_worker(rank: int, config: dict[str, Any], data: dict[str, Any], n_train: int, out_dir: str) -> dict:
    """One run of the real trainer (``flexsnn train``'s library path) under the process group;
    returns the last epoch's seconds (training steps only) and the samples this rank used."""
    from flexsnn.training import distributed
    from flexsnn.training.trainer import TrainConfig, train

    context = distributed.run_context_from_env(device="cpu")
    train_data = load_samples(data, "train", n_train)
    test_data = EventList(list(train_data[:2]), train_data.sensor, train_data.name)
    cfg = TrainConfig.from_dict(config)
    res = train(cfg, out_dir=out_dir, context=context, train_data=train_data, test_data=test_data)
    used = len(context.shard(list(range(len(train_data)))))
    return {"rank": rank, "world": context.world_size, "epoch_seconds": res.history[-1]["epoch_seconds"],
            "samples": used * context.world_size}


def eval_worker(rank: int, chip_path: str, data: dict[str, Any], n_eval: int) -> dict:
    """Sharded evaluation on the async simulator; rank 0 returns samples and seconds."""
    from flexsnn import parallel
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.deploy.factory import make_backend
    from flexsnn.deploy.sharded import evaluate_sharded

    image = ChipImage.load(chip_path)
    samples = load_samples(data, "test", n_eval)
    be = make_backend("async", image=image)
    for ev, _ in samples[:2]:  # warm-up: numba kernels load / compile outside the timing
        be.run(ev)
    parallel.barrier()
    t = time.perf_counter()
    res = evaluate_sharded(be, samples)
    seconds_call = time.perf_counter() - t
    if res is None:
        return {"rank": rank}
    # res.seconds: the library's own figure, from the ranks' common start (a barrier, after the
    # one-off check that every rank loaded the same image) to the gathered result
    return {"rank": rank, "samples": res.samples, "seconds": res.seconds, "seconds_call": seconds_call,
            "accuracy": res.accuracy, "synops_mean": res.synops_mean}


def both_worker(rank: int, config: dict[str, Any], data: dict[str, Any], n_train: int, out_dir: str,
                chip_path: str, n_eval: int) -> dict:
    """Training, then evaluation, in one process group (one start-up per measurement pair)."""
    return {"train": train_worker(rank, config, data, n_train, out_dir),
            "eval": eval_worker(rank, chip_path, data, n_eval)}
