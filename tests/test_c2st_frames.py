"""The frame-statistics study (``benchmarks/c2st_frames.py``) and its per-cell count model
(``benchmarks/_frame_counts.py``): the views compute what they name, the untrained model is
Poisson in the shipped rates, fitting learns a count distribution Poisson cannot, sampling is
seeded, events keep their frame counts, and the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import _frame_counts as fc
from benchmarks.c2st_frames import frame_views, permute_pixels


def test_count_histogram_view():
    frames = np.zeros((1, 10, 2, 34, 34), np.float32)
    frames[0, 3, 1, 0, :5] = [1, 1, 2, 5, 7]
    hist = frame_views(frames)["count histogram per frame"].reshape(10, 2, 5)
    np.testing.assert_allclose(hist[3, 1], [0.4, 0.2, 0.0, 0.0, 0.4])
    assert hist.sum() == pytest.approx(1.0)  # every other frame is empty


def test_correlation_views():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.poisson(2.0, (2, 10, 2, 1, 34)), 34, axis=3).astype(np.float32)
    v = frame_views(frames)  # each frame constant along y: stripes
    np.testing.assert_allclose(v["neighbour correlation y"], 1.0)
    assert np.abs(v["neighbour correlation x"]).mean() < 0.3
    assert v["consecutive-frame correlation"].shape == (2, 18)


def test_untrained_model_is_poisson_in_the_rates():
    import torch
    from scipy.stats import poisson

    lam = np.full((1, 2, 10, 34, 34), 0.7, np.float32)
    lam[0, 1, 4] = 2.5
    net = fc.frame_count_net(hidden=4)
    with torch.no_grad():
        p = torch.softmax(net.logits(torch.from_numpy(np.log(lam))), 3).numpy()
    for rate, got in ((0.7, p[0, 0, 0, :, 5, 5]), (2.5, p[0, 1, 4, :, 5, 5])):
        pmf = poisson.pmf(np.arange(fc.K), rate)
        np.testing.assert_allclose(got, pmf / pmf.sum(), rtol=1e-4)  # Poisson cut at K - 1
    drawn = fc.sample_frame_counts(net, np.log(lam), seed=0)
    assert abs(drawn[0, 1, 4].mean() - 2.5) < 0.15 and abs(drawn[0, 0, 0].mean() - 0.7) < 0.1


def test_fit_learns_an_under_dispersed_count():
    """Counts that are exactly 2 where the rate says 2: Poisson cannot express that, the
    correction can."""
    rng = np.random.default_rng(0)
    lam = rng.choice([0.05, 2.0], size=(12, 2, 10, 34, 34)).astype(np.float32)
    counts = np.where(lam > 1, 2, 0)
    log_rates = np.log(lam)
    net = fc.frame_count_net(hidden=8)
    info = fc.fit_frame_counts(net, log_rates, counts, log_rates, counts, epochs=8, seed=0,
                               batch_size=4, log=lambda *_: None)
    assert info["held_out_ce_before"] == pytest.approx(fc.poisson_cross_entropy(log_rates, counts), rel=1e-3)
    assert info["held_out_ce_after"] < 0.5 * info["held_out_ce_before"]


def test_sampling_is_seeded():
    net = fc.frame_count_net(hidden=4)
    log_rates = np.log(np.full((3, 2, 10, 34, 34), 0.5, np.float32))
    a, b = fc.sample_frame_counts(net, log_rates, seed=5), fc.sample_frame_counts(net, log_rates, seed=5)
    c = fc.sample_frame_counts(net, log_rates, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_frame_counts_to_events_keeps_the_counts():
    from benchmarks.fit_learned_dvs import normalized_counts

    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, size=(2, 10, 34, 34))
    counts[0, 9, 0, 0] = 1  # the last frame holds the recording's last event
    rates = np.ones((2, 30, 34, 34))
    ev = fc.frame_counts_to_events(counts, rates, 300_000, rng)
    assert len(ev) == counts.sum() and ev["t"][-1] == 300_000 and np.all(np.diff(ev["t"]) >= 0)
    np.testing.assert_array_equal(normalized_counts(ev, 10), counts)
    assert len(np.unique(ev["t"])) > 0.9 * len(ev)  # spread inside the frames, not at their centres


def test_frame_log_rates_sums_bins_in_frames():
    rates = np.ones((1, 2, 30, 34, 34))
    np.testing.assert_allclose(fc.frame_log_rates(rates), np.log(3.0), rtol=1e-6)
    with pytest.raises(ValueError, match="multiple of 10"):
        fc.frame_log_rates(np.ones((1, 2, 25, 34, 34)))


def test_permute_pixels_moves_whole_vectors_among_alike_pixels():
    rng = np.random.default_rng(0)
    expected = np.zeros((2, 10, 34, 34))
    expected[:, 2, 5:15, 5:15] = 3.0  # 100 alike pixels per polarity
    expected[:, 7, 20:30, 20:30] = 3.0  # another 100, with another profile
    expected[:, :, 0, 0] = 0.01  # 0.1 in all, below min_expected: stays
    expected += rng.uniform(0, 0.01, expected.shape)  # alike, not identical (k-means needs distinct points)
    counts = rng.poisson(expected * 0.9 + 0.05)
    out = permute_pixels(counts, expected, group_size=5, seed=1)
    assert not np.array_equal(out, counts)
    np.testing.assert_array_equal(out[:, :, 0, 0], counts[:, :, 0, 0])
    for p in range(2):
        a, b = counts[p].reshape(10, -1).T, out[p].reshape(10, -1).T  # [pixels, T]
        assert sorted(map(tuple, a)) == sorted(map(tuple, b))  # whole vectors, each used once
    for block in (np.s_[:, :, 5:15, 5:15], np.s_[:, :, 20:30, 20:30]):  # never across profiles
        assert sorted(counts[block].ravel()) == sorted(out[block].ravel())
        assert out[block].sum() == counts[block].sum()


def test_c2st_frames_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_frames

    res = c2st_frames.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_frames_smoke.json").read_text())
    assert doc["smoke"] and doc["n_fit"] + doc["n_held_out"] == 60
    assert set(doc["shipped"]["views"]) == set(doc["frame_model"]["views"])
    assert "count histogram per frame" in res["shipped"]["views"]
    assert set(doc["hybrids"]) == {"real frame counts", "pixels permuted in groups of 3",
                                   "pixels permuted in groups of 6"}
    fit = doc["frame_model"]["fit"]
    assert fit["held_out_ce_after"] < fit["held_out_poisson_ce"]
