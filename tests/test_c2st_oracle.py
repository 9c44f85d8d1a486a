"""The oracle study (``benchmarks/c2st_oracle.py``): a real recording's own counts as rates come
back bin for bin when drawn exactly, blurring keeps the totals, and the script runs in smoke
mode."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.c2st_oracle import (ARMS, N_BINS, arm_rates, blur_correlations, draw_all, oracle_rates,
                                    oracle_sampler)
from flexsnn.data.events import EVENT_DTYPE
from flexsnn.data.learned_dvs import LearnedDVS


def _recording(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 3000
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = rng.integers(8, 26, n), rng.integers(8, 26, n), rng.integers(0, 2, n)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    return ev


def test_oracle_rates_are_the_counts_and_blurring_keeps_their_totals():
    recs = [_recording(0), _recording(1)]
    exact = oracle_rates(recs)
    assert exact.shape == (2, 2, N_BINS, 34, 34) and exact.sum() == 6000
    r = recs[0]
    assert exact[0, 1, :, 12, 15].sum() == ((r["p"] == 1) & (r["y"] == 12) & (r["x"] == 15)).sum()
    for t, s in ((0.7, 0.0), (0.0, 0.5)):
        blurred = oracle_rates(recs, t, s)
        assert abs(blurred.sum() - 6000) < 1e-6 and blurred.max() < exact.max()
    corr = blur_correlations(exact, exact, blurs=((0.0, 0.0), (0.0, 1.0)))
    assert corr[0]["correlation"] > 0.999 > corr[1]["correlation"]


def test_mixed_arms_take_their_share_of_the_real_counts():
    counts = oracle_rates([_recording(3)])
    cnn = np.full_like(counts, 0.1)
    assert np.array_equal(arm_rates(counts, cnn, 0.0, 0.0, 1.0), counts)
    assert np.array_equal(arm_rates(counts, cnn, 0.0, 0.0, 0.0), cnn)
    assert np.allclose(arm_rates(counts, cnn, 0.0, 0.0, 0.25), 0.25 * counts + 0.075)
    assert np.allclose(arm_rates(counts, cnn, 0.0, 0.5, 1.0).sum(), counts.sum())
    assert sorted({a[4] for a in ARMS}) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_drawn_exactly_the_counts_come_back_bin_by_bin():
    model = oracle_sampler(LearnedDVS(), "exact")
    rates = oracle_rates([_recording(2)])
    again = oracle_rates(draw_all(model, rates, np.random.default_rng(0)))[0]
    rates = rates[0]
    assert abs(again.sum() - rates.sum()) <= 0.01 * rates.sum()  # no background of the model's added
    assert np.abs(again - np.round(rates)).sum() <= 0.06 * rates.sum()  # moves only at bin edges
    assert [a[1] for a in ARMS].count("exact") >= 3


def test_oracle_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_oracle import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_oracle_smoke.json").read_text())
    assert set(saved["arms"]) == {a[0] for a in ARMS} and res["smoke"] is True
    assert all(0.0 <= arm["c2st"] <= 1.0 for arm in saved["arms"].values())
    assert len(saved["cnn_blur"]) == 15
