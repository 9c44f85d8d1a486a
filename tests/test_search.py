"""Accuracy estimation (least squares on sqrt(log2 t)) and the energy-bounded DFS."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexsnn.errors import ConfigError
from flexsnn.training.search import (
    AccuracyModel, config_features, dfs_search, energy, fit_accuracy_model, fit_quality,
    run_search, sample_distinct_configs,
)

K_TRUE = (0.05, 0.02, 0.08, 0.01)
C_TRUE = 0.3


def _truth(cfg, noise_rng=None, sigma=0.0):
    acc = float(np.sqrt(np.log2(np.asarray(cfg, float))) @ np.asarray(K_TRUE) + C_TRUE)
    return acc + (noise_rng.normal(0, sigma) if noise_rng is not None else 0.0)


def test_features_hand_values():
    f = config_features([(1, 2, 4, 16)])
    np.testing.assert_allclose(f, [[0.0, 1.0, np.sqrt(2.0), 2.0]])
    with pytest.raises(ConfigError):
        config_features([(0, 1)])


def test_fit_recovers_exact_coefficients():
    rng = np.random.default_rng(0)
    cfgs = sample_distinct_configs(18, [(1, 8)] * 4, rng)
    model = fit_accuracy_model(cfgs, [_truth(c) for c in cfgs])
    np.testing.assert_allclose(model.K, K_TRUE, atol=1e-10)
    assert model.c == pytest.approx(C_TRUE, abs=1e-10)
    q = fit_quality(model, cfgs, [_truth(c) for c in cfgs])
    assert q.r2 == pytest.approx(1.0) and q.mae < 1e-10 and q.n == 18


def test_fit_quality_on_noisy_holdout():
    rng = np.random.default_rng(1)
    cfgs = sample_distinct_configs(18, [(1, 8)] * 4, rng)
    hold = sample_distinct_configs(30, [(1, 8)] * 4, rng, exclude=cfgs)
    assert not set(cfgs) & set(hold)
    model = fit_accuracy_model(cfgs, [_truth(c, rng, 0.002) for c in cfgs])
    q = fit_quality(model, hold, [_truth(c, rng, 0.002) for c in hold])
    assert q.r2 > 0.9 and q.mae < 0.01 and q.pearson > 0.95


def test_fit_needs_enough_configs():
    with pytest.raises(ConfigError):
        fit_accuracy_model([(1, 2), (2, 2)], [0.1, 0.2])


def test_energy():
    assert energy((3, 2, 1), (0.5, 0.25, 1.0)) == pytest.approx(3 * 0.5 + 2 * 0.25 + 1.0)
    with pytest.raises(ConfigError):
        energy((1, 2), (0.1,))


def _brute(model, rates, budget, ranges):
    best = None
    for cfg in itertools.product(*[range(lo, hi + 1) for lo, hi in ranges]):
        if energy(cfg, rates) <= budget + 1e-9:
            est = float(model.predict([cfg])[0])
            if best is None or est > best[0] + 1e-15:
                best = (est, cfg)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_dfs_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 4
    model = AccuracyModel(K=tuple(rng.uniform(-0.02, 0.1, n)), c=0.2)
    rates = rng.uniform(0.01, 0.3, n)
    ranges = [(1, 6)] * n
    budget = energy((3,) * n, rates)
    res = dfs_search(model, rates, budget, ranges)
    est, cfg = _brute(model, rates, budget, ranges)
    assert res.estimated_accuracy == pytest.approx(est)
    assert energy(res.config, rates) <= budget + 1e-9
    assert res.energy == pytest.approx(energy(res.config, rates))
    assert res.estimated_accuracy >= float(model.predict([(3,) * n])[0]) - 1e-12


def test_dfs_fixed_stage_and_infeasible_budget():
    model = AccuracyModel(K=(0.1, 0.1), c=0.0)
    res = dfs_search(model, (0.1, 0.1), 10.0, [(5, 5), (1, 8)])
    assert res.config == (5, 8)
    with pytest.raises(ConfigError) as info:
        dfs_search(model, (1.0, 1.0), 1.0, [(1, 4), (1, 4)])
    assert info.value.field == "budget"


def test_run_search_on_synthetic_measurements():
    rng = np.random.default_rng(5)
    rates = (0.2, 0.1, 0.05, 0.3)
    rep = run_search(lambda c: _truth(c), rates, [(1, 8)] * 4, budget_T=3, n_fit=18, n_holdout=8, seed=2)
    assert len(rep.fit_configs) == 18 and len(rep.holdout_configs) == 8
    assert rep.fit_quality_holdout.r2 == pytest.approx(1.0)
    assert rep.baseline_config == (3, 3, 3, 3)
    assert rep.result.energy <= rep.budget + 1e-9
    assert rep.found_accuracy >= rep.baseline_accuracy
    assert rep.to_dict()["result"]["config"] == rep.result.config
    del rng


def test_bn_calibrated_measure_averages_three_calibrations_per_config():
    """Paper A.3: BN calibrated at each configuration, 3 calibrations averaged, stats restored."""
    import torch

    from flexsnn.models.zoo import build_model
    from flexsnn.training.bn_calibration import calibrate_bn
    from flexsnn.training.search import bn_calibrated_measure

    torch.manual_seed(0)
    model = build_model("speck3c1fc", batch_norm=True).eval()
    xs = [(torch.rand(4, 6, 2, 34, 34) < 0.2).float() * (1 + k) for k in range(3)]  # [B, T, C, H, W]
    batches = lambda cfg, k: [(xs[k][:, :cfg[0]], torch.zeros(4))]  # noqa: E731
    bn = model.stages[0].layers[1]
    seen: list[tuple] = []

    def probe(cfg):  # "accuracy" = a function of the statistics in place now
        seen.append((cfg, float(bn.running_var.sum())))
        return float(bn.running_mean.sum())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure = bn_calibrated_measure(model, probe, batches, n_calibrations=3, n_batches=1)
    got = measure((3, 2, 2, 1))
    assert len(seen) == 3 and len({v for _, v in seen}) == 3            # three different calibrations
    expected = []
    for k in range(3):
        calibrate_bn(model, batches((3, 2, 2, 1), k), config=(3, 2, 2, 1), n_batches=1)
        expected.append(float(bn.running_mean.sum()))
    assert got == pytest.approx(float(np.mean(expected)))
    model.load_state_dict(before)
    measure((3, 2, 2, 1))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored
    no_bn = build_model("speck3c1fc")
    assert bn_calibrated_measure(no_bn, probe, batches) is probe
    assert bn_calibrated_measure(model, probe, batches, n_calibrations=0) is probe
    with pytest.raises(ConfigError):
        bn_calibrated_measure(model, probe, batches, n_calibrations=-1)
