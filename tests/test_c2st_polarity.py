"""The polarity-balance study (``benchmarks/c2st_polarity.py``): the regression recovers a known
relation, the balanced renderer moves each interior pixel's ON - OFF to its target while keeping
its events, and the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.c2st_polarity import (ARMS, BalancedRenderer, check_difference, difference_features,
                                      fit_difference, on_minus_off, population_log_ratio)
from flexsnn.data.learned_dvs import LearnedDVS


def test_the_regression_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    rates = rng.uniform(0.0, 0.4, (40, 2, 30, 34, 34))
    pattern = rng.normal(0.0, 0.5, (34, 34))  # the sensor's ON/OFF threshold ratio
    rates[:, 1] *= np.exp(pattern)
    log_ratio = population_log_ratio(rates)
    assert log_ratio.shape == (1156,) and np.corrcoef(log_ratio, pattern.ravel())[0, 1] > 0.99
    total, d_pop, d_cnn = difference_features(rates, log_ratio)
    diff = 0.8 * d_pop + 0.1 * d_cnn - 0.1 + 0.3 * rng.standard_normal(total.shape)
    mask = total >= 2
    coef = fit_difference(diff, total, d_pop, d_cnn, mask)
    assert abs(coef["a_pop"] - 0.8) < 0.05 and abs(coef["b_cnn"] - 0.1) < 0.02 and abs(coef["c"] + 0.1) < 0.02
    assert abs(coef["residual_sd"] - 0.3) < 0.01
    assert abs(check_difference(coef, diff, total, d_pop, d_cnn, mask)["residual_sd"] - 0.3) < 0.01
    counts = np.zeros((1, 2, 34, 34))
    counts[0, 1, 3, 4], counts[0, 0, 3, 4] = 5, 2
    assert on_minus_off(counts)[0, 3 * 34 + 4] == 3


def test_the_balanced_renderer_moves_interior_pixels_to_their_target():
    model = LearnedDVS()
    image = np.zeros((1, 28, 28))
    image[0, 6:22, 10:18] = 1.0
    rates = model.rates(image)[0]
    log_ratio = np.zeros(1156)  # every pixel interior, balanced in expectation
    coef = {"a_pop": 0.0, "b_cnn": 0.0, "c": 0.0}
    renderer = BalancedRenderer(model, log_ratio, coef, noise_sd=0.0, min_events=3)
    before = model.sample(rates, np.random.default_rng(1))
    after = renderer.sample(rates, np.random.default_rng(1))
    assert len(after) == len(before) and np.all(np.diff(after["t"]) >= 0)

    def diff_and_total(ev):
        pix = ev["y"].astype(np.int64) * 34 + ev["x"]
        on = np.bincount(pix[ev["p"] == 1], minlength=1156)
        off = np.bincount(pix[ev["p"] == 0], minlength=1156)
        return on - off, on + off

    d0, n0 = diff_and_total(before)
    d1, n1 = diff_and_total(after)
    assert np.array_equal(n0, n1)  # each pixel keeps its events
    busy = n0 >= 3
    assert np.abs(d1[busy]).max() <= 1 < np.abs(d0[busy]).max()
    assert np.array_equal(d1[~busy], d0[~busy])


def test_polarity_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_polarity import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_polarity_smoke.json").read_text())
    assert set(saved["arms"]) == {a[0] for a in ARMS} and res["smoke"] is True
    views = saved["arms"]["shipped renderer"]["count_views"]
    assert set(views) == {"both", "on", "off", "sum", "on_minus_off"}
    assert set(saved["regression"]) == {"fit", "held_out"} and "real" in saved["spread"]
