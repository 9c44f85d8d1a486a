"""The C2ST-history study (``benchmarks/c2st_history.py``): the hybrids keep what they claim to
keep, the history model starts as the shipped renderer's mean, the count mixture's share is
recovered by its fit, generation is seeded, and the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import _history_rates as hr
from benchmarks.c2st_history import resample_times, segment_of_bins
from flexsnn.data.learned_dvs import load_learned_dvs
from flexsnn.data.saccade import load_mnist_images


@pytest.fixture(scope="module")
def model_and_images():
    model = load_learned_dvs()
    images = load_mnist_images()[0][:4]
    return model, images, model.rates(images)


def _segment_keys(rec, cuts, n_bins=30):
    duration = int(rec["t"][-1]) + 1
    seg = segment_of_bins(n_bins, cuts)[rec["t"].astype(np.int64) * n_bins // duration]
    return sorted(zip(rec["x"].tolist(), rec["y"].tolist(), rec["p"].tolist(), seg.tolist()))


@pytest.mark.parametrize("cuts", [np.array([]), np.array([0.3, 0.72]), np.arange(1, 10) / 10])
def test_resample_times_keeps_pixel_polarity_and_segment(model_and_images, cuts):
    model, _, rates = model_and_images
    rec = model.sample(rates[0], np.random.default_rng(0))
    out = resample_times(rec, rates[0], cuts, np.random.default_rng(1))
    assert len(out) == len(rec) and np.all(np.diff(out["t"]) >= 0)
    assert out["t"][-1] == rec["t"][-1]
    assert _segment_keys(out, cuts) == _segment_keys(rec, cuts)
    assert not np.array_equal(out["t"], rec["t"])


def test_resample_times_follows_the_profile():
    from flexsnn.data.events import EVENT_DTYPE

    rates = np.zeros((2, 10, 34, 34))
    rates[1, 7, 5, 5] = 1.0  # all of pixel (5, 5)'s ON profile sits in bin 7
    rec = np.zeros(50, EVENT_DTYPE)
    rec["x"], rec["y"], rec["p"] = 5, 5, 1
    rec["t"] = np.linspace(0, 9_999, 50).astype(np.int64)
    out = resample_times(rec, rates, np.array([]), np.random.default_rng(0))
    assert np.all((out["t"][:-1] >= 7_000) & (out["t"][:-1] < 8_000))
    assert out["t"][-1] == 9_999  # the span is kept


def test_untrained_history_net_is_the_shipped_mean(model_and_images):
    import torch

    model, images, rates = model_and_images
    net = hr.history_net(model)
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    counts = torch.from_numpy(rates.astype(np.float32))  # any counts: the history part is zero
    with torch.no_grad():
        forced = net.teacher_forced(x, counts).double().numpy()
    np.testing.assert_allclose(forced, rates, rtol=1e-4, atol=1e-6)


def test_history_fit_lowers_the_likelihood_on_history_dependent_counts(model_and_images):
    """Counts that copy the previous bin's counts: only the history part can learn that."""
    import torch

    model, images, rates = model_and_images
    rng = np.random.default_rng(0)
    counts = rng.poisson(rates).astype(np.float32)
    counts[:, :, 1:] = np.maximum(counts[:, :, 1:], counts[:, :, :-1])
    net = hr.history_net(model, hidden=8, kernel=3)
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    c = torch.from_numpy(counts)
    info = hr.fit_history(net, x, c, x, c, epochs=6, seed=0, batch_size=4, log=lambda *_: None)
    assert info["nll_after"]["fit"] < info["nll_before"]["fit"] - 0.005


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_poisson_share_is_recovered(share):
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.2, 4.0, size=40_000)
    counts = hr.draw_counts(rates, share, rng)
    assert abs(counts.mean() - rates.mean()) < 0.03
    fitted, ll = hr.fit_poisson_share(counts, rates)
    assert abs(fitted - share) <= 0.1 and len(ll) == 21


def test_generate_is_seeded_and_keeps_the_duration(model_and_images):
    model, images, _ = model_and_images
    net = hr.history_net(model)
    kw = dict(poisson_share=0.4, duration_mean_us=300_000.0, duration_std_us=0.0)
    a = hr.generate(net, images, seed=3, **kw)
    b = hr.generate(net, images, seed=3, **kw)
    c = hr.generate(net, images, seed=4, **kw)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(len(u) == len(v) and np.array_equal(u, v) for u, v in zip(a, c))
    assert all(len(r) > 100 and r["t"].max() < 300_000 for r in a)


def test_counts_to_events_keeps_the_counts():
    from benchmarks.fit_learned_dvs import normalized_counts

    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, size=(2, 10, 34, 34))
    counts[1, 9, 33, 33] = 1  # an event in the last bin fixes t_last inside it
    ev = hr.counts_to_events(counts, 100_000.0, rng)
    assert len(ev) == counts.sum() and np.all(np.diff(ev["t"]) >= 0)
    np.testing.assert_array_equal(normalized_counts(ev, 10).sum(1), counts.sum(1))


def test_c2st_history_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_history

    res = c2st_history.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_history_smoke.json").read_text())
    assert doc["smoke"] and doc["n_fit"] + doc["n_held_out"] == 60
    assert set(doc["hybrids"]) == {"whole recording", "saccade", "tenth (T=10 frame)"}
    assert 0.0 <= doc["history"]["poisson_share"] <= 1.0
    assert set(res["history"]["c2st"]) == {"fitted mixture", "poisson"}
