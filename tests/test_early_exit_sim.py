"""Early stop on the async simulator (deploy/early_exit.py): prefixes, minimal stop, k unreachable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chip_builders import single_core_image
from flexsnn.converters.export import export_chip_image
from flexsnn.data.events import make_events
from flexsnn.deploy.async_sim import AsyncSimulator
from flexsnn.deploy.early_exit import early_stop_sweep, margin, output_trajectory, run_early_stop, stop_index
from flexsnn.errors import ConfigError
from flexsnn.models.zoo import build_model


@pytest.fixture(scope="module")
def sim():
    torch.manual_seed(0)
    model = build_model("speck3c1fc")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    image, _ = export_chip_image(model)
    s = AsyncSimulator()
    s.load(image)
    return s


def _events(seed: int, n: int = 1500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n),
                       np.sort(rng.integers(0, 200_000, n)))


def test_margin_by_hand():
    assert margin(np.array([3, 7, 1])) == 4
    assert margin(np.array([5, 5])) == 0
    assert margin(np.array([2])) == 2 and margin(np.array([], dtype=np.int64)) == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stop_consumes_the_shortest_prefix_reaching_k(sim, k):
    ev = _events(1)
    res = run_early_stop(sim, ev, k)
    n = res.events_consumed
    assert 0 < n < ev.size and res.stopped_early
    # the decision is what really running the prefix gives
    prefix = sim.run(ev[:n])
    assert res.prediction == prefix.prediction and res.synops == prefix.total_synops
    assert np.array_equal(res.class_counts, prefix.class_counts)
    assert margin(prefix.class_counts) >= k
    assert margin(sim.run(ev[:n - 1]).class_counts) < k      # one event fewer is not enough
    assert res.fraction_of_events == pytest.approx(n / ev.size)
    assert res.fraction_of_duration == pytest.approx((ev["t"][n - 1] - ev["t"][0]) / (ev["t"][-1] - ev["t"][0]))
    assert 0 < res.synops < res.full_synops


def test_unreachable_k_equals_full_run(sim):
    ev = _events(2)
    full = sim.run(ev)
    res = run_early_stop(sim, ev, 10**6)
    assert res.events_consumed == ev.size and not res.stopped_early
    assert res.prediction == full.prediction == res.full_prediction
    assert res.synops == full.total_synops and res.fraction_of_duration == 1.0
    assert np.array_equal(res.class_counts, full.class_counts)


def test_trajectory_counts_match_prefix_runs(sim):
    ev = _events(3, 800)
    traj = output_trajectory(sim, ev)
    for n in (0, 1, 200, 555, 800):
        assert np.array_equal(traj.counts_after(n), sim.run(ev[:n]).class_counts)
    assert stop_index(traj, 0) == 0


def test_sweep_fractions_grow_with_k(sim):
    data = [(_events(s, 1000), s % 10) for s in range(4)]
    points, full = early_stop_sweep(sim, data, [1, 3, 10**6])
    assert [p.k for p in points] == [1, 3, 10**6]
    fr = [p.fraction_of_events for p in points]
    assert fr == sorted(fr) and fr[-1] == 1.0
    syn = [p.synops_fraction for p in points]
    assert syn == sorted(syn) and syn[-1] == pytest.approx(1.0)
    assert points[-1].agreement_with_full == 1.0 and points[-1].accuracy == full["accuracy"]


def test_leaking_image_refused():
    image = single_core_image(np.ones((2, 1, 1, 1)), in_shape=(1, 4, 4), biases=[1, 0], leak=True)
    s = AsyncSimulator()
    s.load(image)
    ev = make_events([0, 1], [0, 1], [0, 0], [0, 10])
    with pytest.raises(ConfigError, match="leak"):
        run_early_stop(s, ev, 1)


# --------------------------------------------------------------------------- benchmark smoke run
@pytest.mark.slow
def test_early_exit_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "early_exit.py"
    spec = importlib.util.spec_from_file_location("_bench_early_exit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "early_exit.json").read_text())
    n = len(data["thresholds"])
    for name in ("sdt", "mtt"):
        assert len(data[name]["accuracy"]) == len(data[name]["mean_T"]) == n
        assert data[name]["mean_T"][0] == 1.0 and data[name]["mean_T"][-1] == data["T_max"]
    sim = data["simulator"]
    for key in ("k", "accuracy", "fraction_of_events", "synops_fraction"):
        assert len(sim[key]) == len(sim["k"])
    assert sim["fraction_of_events"][-1] == 1.0 and "machine" in data
    assert (tmp_path / "early_exit.png").stat().st_size > 0 and (tmp_path / "early_exit_sim.png").stat().st_size > 0
