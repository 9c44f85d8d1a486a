"""flexsnn.training.distributed: the single-process no-op path, sharding arithmetic, and
2-process gloo runs on localhost (spawned, free port, time limit): collectives, BN
calibration across ranks, and DDP training equal to one process with the same global batch
(including a crash and resume)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.training import distributed as d

from dist_workers import TinyEvents, all_checks_worker, bn_batches

SPAWN_TIMEOUT_S = 240.0


# ------------------------------------------------------------------------------ no-op path
def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not d.is_distributed() and d.get_rank() == 0 and d.get_world_size() == 1
    assert d.is_main_process()
    assert d.all_reduce_sums({"a": 3, "b": 0.5}) == {"a": 3, "b": 0.5}
    t = torch.tensor([1.0, 2.0])
    r = d.all_reduce_tensor(t)
    assert torch.equal(r, t) and r is not t
    d.check_agreement(object(), what="anything")  # nothing to compare with
    d.barrier()
    assert d.broadcast_object({"x": 1}) == {"x": 1}
    assert d.all_gather_objects(5) == [5]
    model = torch.nn.Linear(2, 2)
    assert d.wrap_model(model) is model and d.unwrap_model(model) is model
    assert d.sync_bn_statistics(model, local_batches=4) == 4
    assert d.on_main_process(lambda: 7) == 7
    assert d.make_sampler(list(range(5)), shuffle=True) is None
    info = d.init_from_env(device="cpu")
    assert info == d.DistInfo(device=torch.device("cpu")) and not info.distributed
    from flexsnn.training.trainer import RunContext

    ctx = d.run_context_from_env(device="cpu")
    assert type(ctx) is RunContext


def test_init_from_env_names_missing_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError) as err:
        d.init_from_env(device="cpu")
    assert "$MASTER_ADDR" in str(err.value) and "torchrun" in str(err.value)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        d.init_from_env(device="cpu")


def test_nccl_on_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="nccl"):
        d.init_from_env(device="cpu", backend="nccl")


@pytest.mark.parametrize("n,world,batch", [(16, 2, 4), (17, 2, 4), (23, 3, 2), (5, 4, 1), (3, 2, 8)])
def test_shard_order_rebuilds_the_global_batches(n, world, batch):
    order = np.random.default_rng(n).permutation(n).tolist()
    shards = [d.shard_order(order, rank=r, world_size=world) for r in range(world)]
    usable = n - n % world
    assert len({len(s) for s in shards}) == 1  # same count -> same number of steps everywhere
    assert sorted(sum(shards, [])) == sorted(order[:usable])  # nothing repeated, < world dropped
    steps = -(-len(shards[0]) // batch)
    for k in range(steps):
        union = sorted(i for s in shards for i in s[k * batch:(k + 1) * batch])
        assert union == sorted(order[:usable][k * batch * world:(k + 1) * batch * world])


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (0, 2), (9, 1)])
def test_shard_indices_partition(n, world):
    parts = [d.shard_indices(n, rank=r, world_size=world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ConfigError):
        d.shard_indices(n, rank=world, world_size=world)


def test_rank_zero_filter(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    flt = d.RankZeroFilter()
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    assert flt.filter(rec) and rec.rank == 0
    monkeypatch.setenv("RANK", "1")  # before the group is joined the filter reads torchrun's RANK
    assert not flt.filter(rec)
    warn = logging.LogRecord("x", logging.WARNING, __file__, 1, "msg", None, None)
    assert flt.filter(warn)


def test_fingerprint_is_stable_and_63_bit():
    a, b = d.fingerprint((4, 6, 3)), d.fingerprint((4, 6, 3))
    assert a == b and 0 <= a < 2**63 and a != d.fingerprint((4, 6, 4))


# ------------------------------------------------------------------------------ 2 processes
TRAIN = dict(model="speck3c1fc", T=4, scheme=dict(name="mtt", T=4, s=2, t_min=2, t_max=6), epochs=2,
             amp=False, device="cpu", lr=0.2, optimizer="sgd", eval_every=2, seed=3)
N_TRAIN, N_TEST, LOCAL_BATCH, CRASH_STEP = 16, 4, 4, 3


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-process gloo session running every multi-process check (start-up dominates)."""
    root = tmp_path_factory.mktemp("ddp")
    dirs = {"full0": str(root / "full0"), "full1": str(root / "full1"), "resume": str(root / "resume"),
            "bn": str(root / "bn")}
    res = d.spawn_local(all_checks_worker, 2, dirs, dict(TRAIN, batch_size=LOCAL_BATCH), N_TRAIN, N_TEST,
                        CRASH_STEP, timeout_s=SPAWN_TIMEOUT_S, threads_per_process=1)
    return res, dirs


@pytest.mark.slow
def test_collectives_and_bn_calibration_across_two_ranks(two_ranks):
    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import calibrate_bn

    res = [r["collectives"] for r in two_ranks[0]]
    r0, r1 = res
    assert (r0["rank"], r1["rank"], r0["world"], r0["main"], r1["main"]) == (0, 1, 2, True, False)
    for r in res:
        assert r["sums"] == {"correct": 7, "samples": 20, "loss_sum": 1.5}
        assert isinstance(r["sums"]["correct"], int)
        assert r["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert r["broadcast"] == "from 0"
        assert r["tensor_max"] == [1.0, 0.0]
        assert r["disagreement"] is not None and "rank 0: (4, 6, 3); rank 1: (4, 7, 3)" in r["disagreement"]
        assert r["wrapped_type"] == "DistributedDataParallel" and r["unwrapped_type"] == "TFSNN"
        assert r["bn_total"] == 5
    # the same statistics on both ranks, equal to one process calibrating on all 5 batches
    torch.manual_seed(0)
    ref = build_model("speck3c1fc", batch_norm=True, T=4)
    calibrate_bn(ref, bn_batches(100, 2) + bn_batches(101, 3), n_batches=10)
    expected = {k: v for k, v in ref.state_dict().items() if "running" in k or "tracked" in k}
    assert expected and set(expected) == set(r0["bn_state"])
    for k, v in expected.items():
        torch.testing.assert_close(r0["bn_state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(r0["bn_state"][k], r1["bn_state"][k]), k


@pytest.mark.slow
def test_ddp_training_equals_one_process_with_the_global_batch_and_resumes(two_ranks, tmp_path):
    """2 gloo ranks x batch 4 == 1 process x batch 8 (same seed, MTT with s=2 so no_sync is
    exercised), checkpoints only from rank 0, and a crash at step CRASH_STEP + resume ends with the
    same weights."""
    from flexsnn.training.trainer import TrainConfig, train

    res = [r["train"] for r in two_ranks[0]]
    dirs = two_ranks[1]
    torch.set_num_threads(1)
    single_cfg = TrainConfig.from_dict(dict(TRAIN, batch_size=LOCAL_BATCH * 2))
    from flexsnn.models.zoo import build_model

    torch.manual_seed(TRAIN["seed"])
    init = {k: v.clone() for k, v in build_model("speck3c1fc", T=4).state_dict().items()}
    single = train(single_cfg, out_dir=tmp_path / "single", train_data=TinyEvents(N_TRAIN, seed=1),
                   test_data=TinyEvents(N_TEST, seed=2))
    ref = single.model.state_dict()
    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref)
    assert moved > 1e-3, "training must change the weights for the comparison to mean anything"
    for r in res:
        assert r["crashed"] and r["world"] == 2
        for k, v in ref.items():
            torch.testing.assert_close(r["full"][k], v, rtol=1e-4, atol=1e-5, msg=k)
            torch.testing.assert_close(r["resumed"][k], r["full"][k], rtol=0, atol=1e-6, msg=k)
        # configurations checked for agreement: 2 configs x (4 steps full + 3 crashed + 2 resumed)
        assert r["passes"] == 2 * (4 + CRASH_STEP + 2)
    # metrics are reduced over ranks: the same history everywhere, equal to one process
    assert _close_histories(res[0]["history"], res[1]["history"])
    for a, b in zip(res[0]["history"], single.history):
        assert a["step"] == b["step"]
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
    # only rank 0 wrote files
    assert (Path(dirs["full0"]) / "final.safetensors").is_file()
    assert (Path(dirs["full0"]) / "metrics.jsonl").is_file()
    assert not Path(dirs["full1"]).exists()


def _close_histories(a, b) -> bool:
    return all(x.keys() == y.keys() and all(k == "epoch_seconds" or x[k] == pytest.approx(y[k]) for k in x)
               for x, y in zip(a, b))


@pytest.mark.slow
def test_bn_calibration_after_ddp_training_is_the_same_on_every_rank(two_ranks):
    """MTT with BN under DDP: calibration on each rank's 2 batches, then averaged: every rank
    (and rank 0's final checkpoint) holds the same statistics over 2 x 2 batches."""
    r0, r1 = (r["bn"] for r in two_ranks[0])
    assert r0["stats"] and set(r0["stats"]) == set(r1["stats"])
    for k, v in r0["stats"].items():
        assert torch.equal(v, r1["stats"][k]), k
        assert torch.equal(v, r0["saved"][k]), k
        if k.endswith("num_batches_tracked"):
            assert int(v) == 4
