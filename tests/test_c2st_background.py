"""The background-timing study (``benchmarks/c2st_background.py``): the far-background mask,
re-timing keeps each pixel's total and touches nothing else, sensor profiles count where events
fall, the pattern fit recovers a planted spatio-temporal background, and the script runs in
smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.c2st_background import FAR_PX, far_background, retime, sensor_profiles
from benchmarks.fit_learned_dvs import fit_sensor_patterns


def test_far_background_is_far_from_every_expected_pixel():
    expected = np.zeros((1, 2, 34, 34))
    expected[0, 0, 15:19, 15:19] = 5.0  # the digit
    far = far_background(expected)[0]
    assert not far[15:19, 15:19].any()
    assert not far[17, 18 + int(FAR_PX) - 1] and far[17, 18 + int(FAR_PX)]  # distance 4 no, 5 yes
    assert far[0, 0] and far.sum() < 34 * 34 - 16


def test_retime_keeps_totals_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.4, (3, 2, 10, 34, 34))
    mask = np.zeros((3, 34, 34), bool)
    mask[:, :10] = True
    profile = np.zeros(10)
    profile[7] = 1.0
    out = retime(counts, mask, lambda i, p, y, x: profile, rng)
    np.testing.assert_array_equal(out.sum(2), counts.sum(2))
    np.testing.assert_array_equal(out[:, :, :, 10:], counts[:, :, :, 10:])
    assert out[:, :, 7, :10].sum() == counts[:, :, :, :10].sum()  # every masked event in frame 7


def test_sensor_profiles_count_where_events_fall():
    counts = np.zeros((4, 2, 10, 34, 34), np.int64)
    counts[:, 1, 3, 5, 6] = 2  # sensor pixel (y 5, x 6) fires in frame 3 in every recording
    mask = np.ones((4, 34, 34), bool)
    prior = np.full((2, 10), 0.1)
    prof = sensor_profiles(counts, mask, prior)
    np.testing.assert_allclose(prof.sum(1), 1.0)
    assert prof[1, 3, 5, 6] == pytest.approx((8 + 0.05) / (8 + 0.5))
    np.testing.assert_allclose(prof[1, :, 0, 0], 0.1)  # no events: the prior


def test_fit_recovers_a_planted_background_pattern():
    import torch

    rng = np.random.default_rng(0)
    log_noise = torch.full((1, 2, 6, 34, 34), float(np.log(0.2)))
    planted = np.zeros((2, 6, 34, 34), np.float32)
    planted[1, 2, :17] = 1.5  # the top half of the sensor fires more in bin 2
    signal = torch.zeros(40, 2, 6, 34, 34) + 1e-6
    counts = rng.poisson(0.2 * np.exp(planted), (40, 2, 6, 34, 34))
    fit, held = np.arange(30), np.arange(30, 40)
    arrays, info = fit_sensor_patterns(signal, log_noise, counts, fit, held, signal_too=False, steps=60, log=lambda *_: None)
    pattern = arrays["noise_pt"]
    assert info["nll_after"]["held_out"] < info["nll_before"]["held_out"]
    assert not arrays["gain_pt"].any()  # not fitted unless asked
    assert pattern[1, 2, :17].mean() > 1.0 and abs(pattern[1, 2, 17:].mean()) < 0.3
    assert abs(pattern[0].mean()) < 0.2


def test_fit_recovers_a_planted_signal_pattern():
    import torch

    rng = np.random.default_rng(1)
    log_noise = torch.full((1, 2, 6, 34, 34), -12.0)
    signal = torch.full((200, 2, 6, 34, 34), 0.5)
    planted = np.zeros((2, 6, 34, 34), np.float32)
    planted[0, 2:5, :, :17] = -1.0  # the sensor's left half responds less in bins 2-4
    counts = rng.poisson(0.5 * np.exp(planted), (200, 2, 6, 34, 34))
    arrays, info = fit_sensor_patterns(signal, log_noise, counts, np.arange(150), np.arange(150, 200),
                                       signal_too=True, steps=60, log=lambda *_: None)
    assert info["nll_after"]["held_out"] < info["nll_before"]["held_out"]
    assert arrays["gain_pt"][0, 2:5, :, :17].mean() < -0.7 and abs(arrays["gain_pt"][0, 2:5, :, 17:].mean()) < 0.15


def test_c2st_background_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_background

    res = c2st_background.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_background_smoke.json").read_text())
    assert doc["smoke"] and doc["n_fit"] + doc["n_held_out"] == 60
    assert len(doc["far_background"]["hybrids"]) == 4
    assert set(doc["renderer"]) == {"shipped", "shipped + background pattern",
                                    "shipped + background and signal patterns"}
    assert res["far_background"]["events_per_recording"] > 0
    fit = res["renderer"]["shipped + background and signal patterns"]["pattern_fit"]
    assert fit["nll_after"]["fit"] <= fit["nll_before"]["fit"]
