"""The sample-objective study (``benchmarks/c2st_sample_fit.py``): the noise input reaches the
count model, the classifier's inputs and the features are what they name and carry gradients,
the energy score rewards the right distribution, a fit on samples moves a statistic that
likelihood alone cannot, and the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import _frame_counts as fc  # noqa: E402
from benchmarks.c2st_sample_fit import (SampleFit, _onehot, classifier_input, count_features,  # noqa: E402
                                        energy_score)


def _random_convs():
    torch.manual_seed(0)
    return (torch.nn.Conv2d(32, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2, padding=1))


def test_noise_input_reaches_the_logits_and_defaults_to_zeros():
    net = fc.frame_count_net(8, noise_channels=3, depth=3)
    with torch.no_grad():
        net.body[-1].weight.normal_()  # as after training: the correction is no longer zero
    log_rates = torch.full((2, 2, 10, 34, 34), -1.0)
    with torch.no_grad():
        zero = net.logits(log_rates)
        np.testing.assert_array_equal(zero, net.logits(log_rates, torch.zeros(2, 3, 34, 34)))
        assert not torch.allclose(zero, net.logits(log_rates, torch.randn(2, 3, 34, 34)))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.body) == 4  # three 3x3 and the 1x1


def test_classifier_input_stacks_t10_t5_and_totals():
    counts = torch.zeros(1, 2, 10, 34, 34)
    counts[0, 1, 2, 3, 4] = 2.0
    counts[0, 1, 3, 3, 4] = 1.0
    x = classifier_input(counts)
    assert x.shape == (1, 32, 34, 34)
    assert x[0, 10 + 2, 3, 4] == pytest.approx(np.log1p(2.0))  # T = 10: polarity 1, frame 2
    assert x[0, 20 + 5 + 1, 3, 4] == pytest.approx(np.log1p(3.0))  # T = 5: polarity 1, frame 1
    assert x[0, 31, 3, 4] == pytest.approx(np.log1p(3.0)) and x[0, 30].sum() == 0  # totals


def test_count_features_name_their_statistics_and_carry_gradients():
    counts = torch.zeros(1, 2, 10, 34, 34)
    counts[0, 0, 4, 10, 10:12] = torch.tensor([2.0, 3.0])  # two neighbours along x
    onehot = _onehot(counts).requires_grad_(True)
    f = count_features(onehot, _random_convs())
    f.sum().backward()
    assert onehot.grad is not None and onehot.grad.abs().sum() > 0
    f = f.detach()
    n_hist = 2 * 10 * (fc.K - 1)
    hist = f[0, :n_hist].reshape(2, 10, fc.K - 1)
    assert hist[0, 4, 1] == pytest.approx(np.log1p(1)) and hist[0, 4, 2] == pytest.approx(np.log1p(1))
    assert hist.sum() == pytest.approx(2 * np.log1p(1))
    nx = f[0, n_hist:n_hist + 20].reshape(2, 10)
    assert nx[0, 4] == pytest.approx(np.log1p(6.0)) and nx.sum() == pytest.approx(np.log1p(6.0))


def test_energy_score_prefers_the_right_distribution():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(4000, 3, generator=gen)
    right = energy_score(torch.randn(4000, 3, generator=gen), torch.randn(4000, 3, generator=gen), real)
    shifted = energy_score(torch.randn(4000, 3, generator=gen) + 1, torch.randn(4000, 3, generator=gen) + 1, real)
    narrow = energy_score(0.3 * torch.randn(4000, 3, generator=gen), 0.3 * torch.randn(4000, 3, generator=gen), real)
    assert float(right) < float(shifted) and float(right) < float(narrow)
    same = torch.ones(5, 3)
    assert float(energy_score(same, same, same)) == 0.0


def test_energy_fit_moves_a_statistic_likelihood_cannot():
    """Real frames: pixels in pairs along x that are both 1 or both 0 (each 1 with probability
    one half). Cells independent given the image match each pixel's marginal but not the
    pairing; with the noise, the energy score (which sees neighbour products) can."""
    rng = np.random.default_rng(0)
    n = 8
    pairs = rng.integers(0, 2, (n, 2, 10, 34, 17))
    counts = torch.from_numpy(np.repeat(pairs, 2, axis=4).astype(np.float32))
    log_rates = torch.full((n, 2, 10, 34, 34), float(np.log(0.5)))
    fit = SampleFit(log_rates, counts, seed=0, hidden=8, log=lambda *_: None)
    fit.likelihood(3, batch_size=8)

    def neighbour_agreement() -> float:
        drawn = fit.draw(log_rates, seed=1)
        return float((drawn[..., 0::2] == drawn[..., 1::2]).mean())

    before = neighbour_agreement()
    assert before < 0.55  # independent cells: about one half
    fit.energy(15, ce_weight=0.0, lr=3e-3, batch_size=8)
    assert neighbour_agreement() > before + 0.1  # 0.46 -> 0.67 when written


def test_sampling_is_seeded():
    log_rates = torch.full((2, 2, 10, 34, 34), -1.0)
    fit = SampleFit(log_rates, torch.zeros_like(log_rates), seed=0)
    assert np.array_equal(fit.draw(log_rates, seed=3), fit.draw(log_rates, seed=3))
    assert not np.array_equal(fit.draw(log_rates, seed=3), fit.draw(log_rates, seed=4))


def test_c2st_sample_fit_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_sample_fit

    res = c2st_sample_fit.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_sample_fit_smoke.json").read_text())
    assert doc["smoke"] and doc["n_fit"] + doc["n_held_out"] == 60
    assert set(doc["arms"]) == {"likelihood", "energy score", "adversarial"}
    for arm in res["arms"].values():
        assert 0.0 <= arm["c2st"] <= 1.0 and arm["held_out_ce"] > 0
    assert len(doc["arms"]["adversarial"]["trace_per_epoch"]) == 1
