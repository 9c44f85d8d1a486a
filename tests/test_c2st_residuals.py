"""The residual study (``benchmarks/c2st_residuals.py``): its statistics find structure where there
is some and none in independent draws, the time shift keeps every pixel's total, and the script
runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.c2st_residuals import ARMS, ShiftedSampler, residual_stats, sharpen, shift_in_time
from flexsnn.data.learned_dvs import LearnedDVS


def _rates(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 3.0, (20, 2, 30, 34, 34))


def test_independent_draws_have_no_neighbour_correlation_and_shared_residuals_do():
    rates = _rates(0)
    rng = np.random.default_rng(1)
    stats = residual_stats(rng.poisson(rates).astype(float), rates)
    assert abs(stats["variance"] - 1.0) < 0.02
    assert all(abs(v) < 0.02 for k, v in stats.items() if k != "variance")
    # the same residual in horizontal neighbours, and the ON residual copied into OFF one bin later
    counts = rng.poisson(rates).astype(float)
    counts[..., 1::2] = counts[..., 0::2] - rates[..., 0::2] + rates[..., 1::2]
    counts[:, 0, 1:] = counts[:, 1, :-1] - rates[:, 1, :-1] + rates[:, 0, 1:]
    stats = residual_stats(counts, rates)
    assert stats["x+1"] > 0.3 and stats["on,off t+1"] > 0.8


def test_the_shift_keeps_each_pixels_total_and_moves_mass_later():
    rng = np.random.default_rng(2)
    signal = rng.uniform(0.0, 2.0, (2, 30, 34, 34))
    moved = shift_in_time(signal, np.full((30, 34, 34), 0.5))
    assert np.allclose(moved.sum(1), signal.sum(1))
    mean_bin = (np.arange(30)[None, :, None, None] * moved).sum() / moved.sum()
    assert mean_bin > (np.arange(30)[None, :, None, None] * signal).sum() / signal.sum() + 0.3
    for sigmas in ((0.5, 0.0), (0.0, 0.5)):
        sharp = sharpen(signal, *sigmas)
        assert np.all(sharp >= 0) and abs(sharp.sum() / signal.sum() - 1) < 0.01
        assert sharp.std() > signal.std()  # deconvolution sharpens
    assert sharpen(signal, 0.0, 0.0) is signal


def test_the_shifted_sampler_draws_a_recording_with_the_models_event_count():
    model = LearnedDVS()
    image = np.zeros((1, 28, 28))
    image[0, 6:22, 12:16] = 1.0
    rates = model.rates(image)[0]
    shifted = ShiftedSampler(model, sharpen_bins=0.3, shift_bins=0.3, scale_px=1.5, scale_bins=3.0)
    field = shifted.shift_field(np.random.default_rng(0))
    assert field.shape == (model.n_bins, 34, 34) and abs(field.std() - 0.3) < 1e-6
    n = [len(shifted.sample(rates, np.random.default_rng(s))) for s in range(4)]
    assert abs(np.mean(n) / rates.sum() - 1) < 0.1


def test_residual_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_residuals import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_residuals_smoke.json").read_text())
    assert set(saved["arms"]) == {a[0] for a in ARMS} and res["smoke"] is True
    assert set(saved["real"]) | {"mean_rate_correlation"} == set(next(iter(saved["arms"].values()))["stats"])
    assert all(0.0 <= arm["c2st"] <= 1.0 for arm in saved["arms"].values())
