"""flexsnn.deploy.sharded: evaluation split over 2 gloo ranks (spawned on localhost, free port,
time limit) equals one process EXACTLY (accuracy, confusion matrix, SynOps, spikes, latency,
per-sample records) on the async and time-binned backends, and `flexsnn simulate --shard`."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from chip_builders import nmnist_image
from dist_workers import TinyEvents, sharded_eval_worker
from flexsnn import parallel
from flexsnn.deploy.evaluate import evaluate_dataset
from flexsnn.deploy.factory import make_backend
from flexsnn.deploy.sharded import IndexedSubset, evaluate_sharded, merge_records
from flexsnn.errors import ConfigError

N = 9  # odd: the shards differ in size (5 and 4)
#: fields that depend on wall time or on how the work was split, not on the results
TIMING = {"seconds", "samples_per_s", "workers", "provenance"}


def _results(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def test_single_process_sharded_is_evaluate_dataset():
    image = nmnist_image(1)
    data = TinyEvents(5, seed=5, events_per_sample=300)
    one = evaluate_dataset(make_backend("async", image=image), data)
    sharded = evaluate_sharded(make_backend("async", image=image), data)
    assert _results(asdict(sharded)) == _results(asdict(one))
    assert sharded.provenance["sharding"]["world_size"] == 1


def test_indexed_subset_and_merge_records():
    data = TinyEvents(6, seed=1, events_per_sample=50)
    sub = IndexedSubset(data, [4, 1])
    assert len(sub) == 2 and sub.labels == [4, 1] and sub.sensor == data.sensor
    assert (sub[0][0] == data[4][0]).all()
    parts = [[{"index": 2}, {"index": 3}], [{"index": 0}, {"index": 1}]]
    assert [r["index"] for r in merge_records(parts, n=4)] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="missing \\[2\\]"):
        merge_records([[{"index": 0}, {"index": 1}]], n=3)
    with pytest.raises(ConfigError, match="duplicated"):
        merge_records([[{"index": 0}], [{"index": 0}]], n=1)


def test_unloaded_backend_is_refused():
    class Unloaded:
        name = "x"
        image = None

    with pytest.raises(ConfigError, match="loaded backend"):
        evaluate_sharded(Unloaded(), TinyEvents(2))


@pytest.mark.slow
def test_two_ranks_equal_one_process_exactly(tmp_path, capsys):
    from flexsnn.cli import main

    chip = str(nmnist_image(1).save(tmp_path / "m.chip"))
    res = parallel.spawn_local(sharded_eval_worker, 2, chip, N, str(tmp_path / "cli2"),
                               timeout_s=240.0, threads_per_process=1)
    data = TinyEvents(N, seed=5, events_per_sample=300)
    for name, options in (("async", {}), ("time-binned", {"T": 5})):
        one = asdict(evaluate_dataset(make_backend(name, image=nmnist_image(1), **options), data))
        assert one["samples"] == N and sum(map(sum, one["confusion"])) + one["no_decision"] == N
        for r in res:
            got = r[name]
            assert _results(got) == _results(one), name  # exact: ints, floats, per-sample records
            assert got["provenance"]["sharding"]["samples_per_rank"] == [5, 4]
            assert got["workers"] == 2
    # the gathered (rank-0-only) variant with a limit
    limited = asdict(evaluate_dataset(make_backend("async", image=nmnist_image(1)), data, limit=N - 2))
    assert res[1]["limited"] is None
    assert _results(res[0]["limited"]) == _results(limited)
    # the CLI: `flexsnn simulate --shard` wrote one eval.json equal to a plain run's
    assert res[0]["cli_rc"] == 0 and res[1]["cli_rc"] == 0
    assert main(["simulate", "--chip", chip, "--limit", "6", "--seed", "0", "--out", str(tmp_path / "cli1")]) == 0
    sharded = json.loads((tmp_path / "cli2" / "eval.json").read_text())
    plain = json.loads((tmp_path / "cli1" / "eval.json").read_text())
    assert _results(sharded) == _results(plain)
    assert sharded["provenance"]["sharding"]["world_size"] == 2
