"""Dataset evaluation over backends: accuracy, confusion, latency-to-decision, SynOps, workers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chip_builders import nmnist_image, random_events, single_core_image
from flexsnn.data.events import SensorSize, make_events
from flexsnn.deploy.async_sim import AsyncSimulator
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE, RunResult
from flexsnn.deploy.evaluate import decision_latency_us, evaluate_dataset
from flexsnn.deploy.factory import make_backend
from flexsnn.errors import ConfigError


class ListDataset(list):
    """A real in-memory event dataset: a list of (events, label) with .name and .sensor."""

    name = "tiny"
    sensor = SensorSize(2, 2, 1)


def two_class_image():
    """Input 2x2, one channel; a 2x2 kernel maps column 0 to class 0 and column 1 to class 1."""
    w = np.zeros((2, 1, 2, 2), int)
    w[0, 0, :, 0] = 1
    w[1, 0, :, 1] = 1
    return single_core_image(w, (1, 2, 2), thr_high=2)


def sample(col_counts, t0=100):
    """Events alternating between columns: col_counts = (n_col0, n_col1), column 0 first."""
    xs = [0] * col_counts[0] + [1] * col_counts[1]
    return make_events(xs, [0] * len(xs), [0] * len(xs), t0 + np.arange(len(xs)) * 10)


def dataset():
    ds = ListDataset()
    ds += [(sample((4, 1)), 0), (sample((1, 6)), 1), (sample((2, 0)), 0), (sample((5, 1)), 1),
           (sample((0, 1)), 0)]  # the 4th is labelled wrong; the 5th gives no spike at all
    return ds


def test_decision_latency_hand_computed():
    image = two_class_image()
    ev = np.zeros(3, dtype=CHIP_EVENT_DTYPE)
    ev["core"] = 0
    ev["feature"] = [1, 0, 0]
    ev["t"] = [110, 120, 130]
    r = RunResult(events=ev, spike_counts={0: 3}, synops={0: 0}, class_counts=np.array([2, 1]),
                  extras={"t0_us": 100})
    # arg-max: 1 after t=110, tie -> 0 after t=120, stays 0
    assert decision_latency_us(r, image) == 20
    r.events = ev[:0]
    assert decision_latency_us(r, image) is None


def test_evaluate_accuracy_confusion_synops_latency():
    sim = make_backend("async", image=two_class_image())
    res = evaluate_dataset(sim, dataset())
    assert res.samples == 5 and res.num_classes == 2
    assert list(res.predictions) == [0, 1, 0, 0, -1]
    assert res.accuracy == pytest.approx(3 / 5)
    assert res.confusion == [[2, 0], [1, 1]] and res.no_decision == 1
    # each event reaches the one output neuron of both channels: 2 SynOps per event
    assert [s["synops"] for s in res.per_sample] == [10, 14, 4, 12, 2]
    # sample 0: class 0 fires at its 2nd event (t = 110) -> latency 10 µs
    assert res.per_sample[0]["latency_us"] == 10
    # sample 1: class 1 leads from its 3rd event on (t = 120): 20 µs
    assert res.per_sample[1]["latency_us"] == 20
    assert res.per_sample[4]["latency_us"] is None


def test_two_workers_give_the_same_records(tmp_path):
    sim = make_backend("async", image=two_class_image())
    one = evaluate_dataset(sim, dataset())
    two = evaluate_dataset(sim, dataset(), workers=2, chunk_size=2)
    assert two.per_sample == one.per_sample and two.workers == 2
    tb = make_backend("time-binned", T=3, image=two_class_image())
    r1 = evaluate_dataset(tb, dataset(), limit=3)
    r2 = evaluate_dataset(tb, dataset(), limit=3, workers=2, chunk_size=1)
    assert r1.per_sample == r2.per_sample and r1.samples == 3


def test_json_written_atomically(tmp_path):
    sim = make_backend("async", image=two_class_image())
    res = evaluate_dataset(sim, dataset(), limit=2)
    path = res.write(tmp_path / "out" / "eval.json")
    doc = json.loads(path.read_text())
    assert doc["accuracy"] == res.accuracy and doc["samples"] == 2 and doc["backend"] == "async"
    assert json.loads(res.to_json())["confusion"] == res.confusion
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_refusals():
    with pytest.raises(ConfigError):
        evaluate_dataset(make_backend("async"), dataset())  # not loaded
    with pytest.raises(ConfigError):
        evaluate_dataset(make_backend("async", image=two_class_image()), dataset(), workers=0)
    with pytest.raises(ConfigError):
        make_backend("quantum")
    with pytest.raises(ConfigError):
        make_backend("async", spikes="multi")  # typo


def test_speck2e_backend_is_imported_lazily_and_refused_without_samna():
    import sys

    from flexsnn._optional import samna_status
    from flexsnn.errors import BackendUnavailable

    import flexsnn.deploy.factory  # noqa: F401  (importing the factory loads no devkit code)

    assert "samna" not in sys.modules
    if samna_status()[0]:
        pytest.skip("a real samna is installed here")
    with pytest.raises(BackendUnavailable):
        make_backend("speck2e")


def _latency_loop(result, image):
    """The per-event loop decision_latency_us replaced (reference for the vectorised one)."""
    from flexsnn.deploy.evaluate import class_of_channel

    ch2cls = class_of_channel(image)
    ev = result.events[result.events["core"] == image.output_core]
    counts = np.zeros(image.num_classes, dtype=np.int64)
    best, t_change = -1, None
    for f, t in zip(ev["feature"].tolist(), ev["t"].tolist()):
        k = ch2cls.get(int(f))
        if k is None:
            continue
        counts[k] += 1
        new = int(np.argmax(counts))
        if new != best:
            best, t_change = new, int(t)
    return None if t_change is None else t_change - int(result.extras.get("t0_us", 0))


def test_decision_latency_vectorised_equals_loop():
    from flexsnn.converters.chip_image import ReadoutConfig

    rng = np.random.default_rng(0)
    for readout in (None, ReadoutConfig(3)):
        image = nmnist_image(0)
        if readout is not None:
            image = image.__class__(input=image.input, cores=image.cores, output_core=image.output_core,
                                    readout=readout)
        for n in (0, 1, 5, 200, 70_000):
            ev = np.zeros(n, dtype=CHIP_EVENT_DTYPE)
            ev["core"] = rng.choice([image.output_core, 0], n, p=[0.9, 0.1])
            ev["feature"] = rng.integers(0, 10, n)
            ev["t"] = np.sort(rng.integers(0, 10**6, n))
            r = RunResult(events=ev, spike_counts={}, synops={}, class_counts=np.zeros(1, np.int64),
                          extras={"t0_us": 7})
            assert decision_latency_us(r, image) == _latency_loop(r, image), (readout, n)


def test_kept_workers_are_reused_only_for_the_same_objects():
    """keep_workers: the forked processes serve the next call on the same backend, image and
    dataset (same results as one process), and are replaced when any of them changes."""
    from flexsnn.deploy import evaluate as E

    image = nmnist_image(0)
    sim = AsyncSimulator()
    sim.load(image)
    data = [(random_events(s, 34, 34, 2, 300), s % 10) for s in range(6)]
    one = evaluate_dataset(sim, data, workers=1)
    a = evaluate_dataset(sim, data, workers=2, keep_workers=True)
    pool = E._POOL
    assert pool is not None and all(p.is_alive() for p in pool.procs)
    b = evaluate_dataset(sim, data, workers=2, keep_workers=True)
    assert E._POOL is pool  # reused
    other = list(data[:5])
    c = evaluate_dataset(sim, other, workers=2, keep_workers=True)
    assert E._POOL is not pool and not any(p.is_alive() for p in pool.procs)  # replaced
    sim.load(nmnist_image(1))  # same backend object, another image: a new pool again
    pool = E._POOL
    d = evaluate_dataset(sim, other, workers=2)
    assert E._POOL is None and not any(p.is_alive() for p in pool.procs)  # not kept: closed
    assert a.per_sample == b.per_sample == one.per_sample and c.per_sample == one.per_sample[:5]
    sim1 = AsyncSimulator()
    sim1.load(nmnist_image(1))
    assert d.per_sample == evaluate_dataset(sim1, other, workers=1).per_sample
