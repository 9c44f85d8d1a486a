"""Worker functions and tiny data for the multi-process tests (module level, so that
``spawn``ed processes can unpickle them). Not a test module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flexsnn.data.events import NMNIST_SENSOR, SensorSize, make_events


class TinyEvents:
    """``n`` synthetic N-MNIST-sized recordings (34x34, 2 polarities), label ``i % classes``;
    each class lights its own band of rows so that a net can learn something. Deterministic."""

    def __init__(self, n: int, *, seed: int = 0, classes: int = 10, events_per_sample: int = 1500,
                 duration_us: int = 50_000) -> None:
        self.sensor: SensorSize = NMNIST_SENSOR
        self.name = f"tiny-events-{n}-{seed}"
        self.labels = (np.arange(n) % classes).astype(np.int64)
        self._samples = []
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            label = int(self.labels[i])
            k = events_per_sample
            band = 3 * label
            y = np.clip(band + rng.integers(0, 4, k), 0, 33)
            x = rng.integers(0, 34, k)
            p = rng.integers(0, 2, k)
            t = np.sort(rng.integers(0, duration_us, k))
            t[0], t[-1] = 0, duration_us
            self._samples.append(make_events(x, y, p, t))

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self._samples[index], int(self.labels[index])


def train_worker(rank: int, out_dir: str, config: dict[str, Any], n_train: int, n_test: int) -> dict[str, Any]:
    """Run the real trainer under the process group; return rank, final weights and history."""
    import torch

    from flexsnn.training import distributed
    from flexsnn.training.trainer import TrainConfig, train

    torch.set_num_threads(1)
    context = distributed.run_context_from_env(device="cpu")
    cfg = TrainConfig.from_dict(config)
    result = train(cfg, out_dir=Path(out_dir), context=context,
                   train_data=TinyEvents(n_train, seed=1), test_data=TinyEvents(n_test, seed=2))
    return {"rank": rank, "world": context.world_size,
            "state": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            "history": result.history, "passes": getattr(context, "passes", None)}


def bn_batches(seed: int, n: int, batch: int = 3):
    """``n`` random calibration batches ``(x [B, T, C, H, W], y)`` for a BN speck3c1fc."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, 4, 2, 34, 34, generator=g) * 2.0, torch.zeros(batch, dtype=torch.int64))
            for _ in range(n)]


def collectives_worker(rank: int) -> dict[str, Any]:
    """Exercise the helpers of flexsnn.training.distributed inside a 2-process group."""
    import torch

    from flexsnn.models.zoo import build_model
    from flexsnn.training import distributed as d
    from flexsnn.training.bn_calibration import calibrate_bn

    torch.set_num_threads(1)
    out: dict[str, Any] = {"rank": d.get_rank(), "world": d.get_world_size(), "main": d.is_main_process()}
    # sums: integers exact, floats summed; every rank gets them
    out["sums"] = d.all_reduce_sums({"correct": 3 + rank, "samples": 10, "loss_sum": 0.5 * (rank + 1)})
    out["gathered"] = d.all_gather_objects({"rank": rank})
    out["broadcast"] = d.broadcast_object(f"from {rank}")
    out["tensor_max"] = d.all_reduce_tensor(torch.tensor([float(rank), -float(rank)]), op="max").tolist()
    # agreement: equal values pass, different values raise on every rank
    d.check_agreement((4, 6, 3), what="config")
    try:
        d.check_agreement((4, 6 + rank, 3), what="the temporal configuration")
        out["disagreement"] = None
    except d.DistributedError as err:
        out["disagreement"] = str(err)
    # BN calibration across ranks: rank r calibrates on its own batches
    torch.manual_seed(0)
    model = build_model("speck3c1fc", batch_norm=True, T=4)
    mine = bn_batches(100 + rank, 2 + rank)  # unequal counts: 2 and 3 batches
    seen = calibrate_bn(model, mine, n_batches=10)
    total = d.sync_bn_statistics(model, local_batches=seen)
    out["bn_total"] = total
    out["bn_state"] = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}
    # DDP wrapping and no_sync
    wrapped = d.wrap_model(build_model("speck3c1fc", T=4))
    out["wrapped_type"] = type(wrapped).__name__
    out["unwrapped_type"] = type(d.unwrap_model(wrapped)).__name__
    d.barrier()
    return out


class Interrupt(RuntimeError):
    """Raised on every rank at the same step to simulate a crash."""


def train_resume_worker(rank: int, dirs: dict[str, str], config: dict[str, Any], n_train: int,
                        n_test: int, crash_step: int) -> dict[str, Any]:
    """Under one process group: (A) a full run with per-rank output folders (only rank 0
    may write), (B) the same run interrupted at ``crash_step`` on every rank, then resumed
    from rank 0's files. Returns both runs' final weights."""
    import torch

    from flexsnn.training import distributed
    from flexsnn.training import trainer
    from flexsnn.training.trainer import TrainConfig, train

    torch.set_num_threads(1)
    context = distributed.run_context_from_env(device="cpu")
    cfg = TrainConfig.from_dict(config)

    def run(out_dir: str, resume: bool = False):
        return train(cfg, out_dir=Path(out_dir), context=context, resume=resume,
                     train_data=TinyEvents(n_train, seed=1), test_data=TinyEvents(n_test, seed=2))

    full = run(dirs[f"full{rank}"])
    original = trainer.sample_configs

    def crashing(scheme, num_stages, generator, _calls=[0]):
        if _calls[0] == crash_step:
            raise Interrupt(f"simulated crash at step {crash_step}")
        _calls[0] += 1
        return original(scheme, num_stages, generator)

    trainer.sample_configs = crashing
    crashed = False
    try:
        run(dirs["resume"])
    except Interrupt:
        crashed = True
    finally:
        trainer.sample_configs = original
    distributed.barrier()  # as a torchrun restart would: every rank is down before the resume
    resumed = run(dirs["resume"], resume=True)

    def weights(result):
        return {k: v.detach().clone() for k, v in result.model.state_dict().items()}

    return {"rank": rank, "world": context.world_size, "crashed": crashed, "full": weights(full),
            "resumed": weights(resumed), "history": full.history, "resumed_history": resumed.history,
            "passes": context.passes}


def all_checks_worker(rank: int, dirs: dict[str, str], config: dict[str, Any], n_train: int,
                      n_test: int, crash_step: int) -> dict[str, Any]:
    """Both worker bodies in one process group (one spawn: process start-up dominates)."""
    out = {"collectives": collectives_worker(rank)}
    out["train"] = train_resume_worker(rank, dirs, config, n_train, n_test, crash_step)
    out["bn"] = bn_train_worker(rank, dirs["bn"], config, n_train, n_test)
    return out


def bn_train_worker(rank: int, out_dir: str, config: dict[str, Any], n_train: int, n_test: int) -> dict[str, Any]:
    """One epoch of MTT with a BN model: the BN calibration after training must leave the
    same statistics on every rank (averaged over all ranks' calibration batches)."""
    import torch

    from flexsnn.models.checkpoint import load_checkpoint
    from flexsnn.training import distributed
    from flexsnn.training.trainer import TrainConfig, train

    context = distributed.run_context_from_env(device="cpu")
    cfg = TrainConfig.from_dict(dict(config, epochs=1, eval_every=1, bn_calibration_batches=2,
                                     model_kwargs={"batch_norm": True}))
    result = train(cfg, out_dir=Path(out_dir), context=context, train_data=TinyEvents(n_train, seed=1),
                   test_data=TinyEvents(n_test, seed=2))
    stats = {k: v.detach().clone() for k, v in result.model.state_dict().items() if "running" in k or "tracked" in k}
    distributed.barrier()
    saved = None
    if rank == 0:
        weights, _ = load_checkpoint(Path(out_dir) / "final.safetensors")
        saved = {k: weights[k] for k in stats}
    return {"stats": stats, "saved": saved, "torch_threads": torch.get_num_threads()}


def sharded_eval_worker(rank: int, chip_path: str, n: int, cli_out: str) -> dict[str, Any]:
    """Sharded evaluation on two backends (all ranks get the result), then the CLI path
    ``flexsnn simulate --shard`` inside the same process group."""
    from dataclasses import asdict

    from flexsnn.cli import main
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.deploy.factory import make_backend
    from flexsnn.deploy.sharded import evaluate_sharded

    image = ChipImage.load(chip_path)
    data = TinyEvents(n, seed=5, events_per_sample=300)
    out: dict[str, Any] = {"rank": rank}
    for name, options in (("async", {}), ("time-binned", {"T": 5})):
        be = make_backend(name, image=image, **options)
        out[name] = asdict(evaluate_sharded(be, data, all_ranks=True))
    be = make_backend("async", image=image)
    gathered = evaluate_sharded(be, data, limit=n - 2)  # rank 0 only, with a limit
    out["limited"] = None if gathered is None else asdict(gathered)
    out["cli_rc"] = main(["simulate", "--chip", chip_path, "--limit", "6", "--seed", "0",
                          "--out", cli_out, "--shard"])
    return out
