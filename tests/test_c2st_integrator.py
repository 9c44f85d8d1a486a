"""The level-crossing renderer (``benchmarks/_integrator.py``) and its study: a moving map makes
events only where it moves, a pixel's rise less its fall is the change of its trace, level
crossings fire whole thresholds, a planted motion is found again, the hybrids keep their
targets, a saved fit reads back, and the study runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks._integrator import (SIZE, SUB, _crossings, content_motion, draw, initial_path,
                                    integrator_net, load_fit, save_fit, step_rates)
from benchmarks.c2st_integrator import (ARMS, RATIO_LIMIT, arm_factors, cell_factors, pixel_factors,
                                        profile_factor)
from flexsnn.data.learned_dvs import events_at

N_BINS = 6


def _bar() -> np.ndarray:
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 6:22, 12:16] = 1.0
    return image


def _net(path: np.ndarray, rising: int = 1, background: float = 0.01):
    torch.manual_seed(0)
    return integrator_net(np.full((2, N_BINS, SIZE, SIZE), background, np.float32), path, rising)


def _moving_right(px_per_bin: float) -> np.ndarray:
    return initial_path(np.tile([0.0, px_per_bin], (N_BINS, 1)))


def test_a_still_map_fires_nothing_and_the_bins_sum_the_steps():
    images = torch.from_numpy(_bar())
    still = _net(initial_path(np.zeros((N_BINS, 2))))
    with torch.no_grad():
        assert float(still.step_events(images).abs().max()) == 0.0
        assert torch.allclose(still(images, None), still.background[None])
        moving = _net(_moving_right(0.5))
        steps = moving.step_events(images)
        assert steps.shape == (1, 2, N_BINS * SUB, SIZE, SIZE) and float(steps.sum()) > 10.0
        binned = steps.reshape(1, 2, N_BINS, SUB, SIZE, SIZE).sum(3) + moving.background[None]
        assert torch.allclose(moving(images, None), binned, atol=1e-5)


def test_rise_less_fall_is_the_change_of_the_trace_in_the_rising_polarity():
    images = torch.from_numpy(_bar())
    for rising in (0, 1):
        net = _net(_moving_right(0.5), rising)
        with torch.no_grad():
            trace = net.trace(images)
            steps = net.step_events(images)[0].sum(1)  # [2, 34, 34]
        change = (trace[0, -1] - trace[0, 0]) * torch.exp(net.gain[rising])
        assert torch.allclose(steps[rising] - steps[1 - rising], change, atol=1e-4)
        # the bar moving right: its right edge rises, its left edge falls
        row = steps[:, 14]
        assert int(row[rising].argmax()) > int(row[1 - rising].argmax())


def test_a_recordings_own_displacement_moves_its_events():
    images = torch.from_numpy(np.repeat(_bar(), 2, axis=0))
    net = _net(_moving_right(0.5))
    d = np.zeros((2, N_BINS, 2), np.float32)
    d[1, :, 1] = 2.0  # the second recording's content two pixels further right throughout
    with torch.no_grad():
        rates = step_rates(net, images.numpy(), d, per_bin=True).sum((1, 2))  # [2, 34, 34]
    cols = np.arange(SIZE)
    centre = [(r.sum(0) * cols).sum() / r.sum() for r in rates]
    assert abs(centre[1] - centre[0] - 2.0) < 0.1


def test_level_crossings_fire_whole_thresholds_at_the_steps_that_rise():
    rng = np.random.default_rng(0)
    rows = np.zeros((2, 12))
    rows[0, 3:6] = 1.0  # three thresholds' rise in steps 3-5
    rows[1, 7] = 2.5
    counts = []
    for _ in range(400):
        ch, u = _crossings(rows, rng)
        assert np.all(((u * 12).astype(int) >= 3) & ((u * 12).astype(int) <= 7))
        counts.append(np.bincount(ch, minlength=2))
    counts = np.array(counts)
    assert np.all(counts[:, 0] == 3)
    assert set(np.unique(counts[:, 1])) == {2, 3} and abs(counts[:, 1].mean() - 2.5) < 0.08


def test_draw_keeps_the_expected_events_and_the_layout():
    rng = np.random.default_rng(1)
    steps = np.zeros((2, N_BINS * SUB, SIZE, SIZE))
    steps[1, 5:9, 10, 20] = 1.5  # polarity 1, pixel (y 10, x 20): 6 events in steps 5-8
    extra = np.full((2, N_BINS, SIZE, SIZE), 0.001)
    ev = draw(steps, extra, rng, shape=np.inf, duration_mean_us=300_000.0, duration_std_us=0.0)
    on = ev[(ev["p"] == 1) & (ev["y"] == 10) & (ev["x"] == 20)]
    assert len(on) >= 6 and np.all(np.diff(ev["t"].astype(np.int64)) >= 0)
    assert np.all((on["t"] >= 5 / 24 * 300_000 - 1) & (on["t"] <= 9 / 24 * 300_000 + 1))
    totals = [len(draw(steps, extra, rng, shape=4.0, duration_mean_us=300_000.0, duration_std_us=0.0))
              for _ in range(60)]
    assert abs(np.mean(totals) - (steps.sum() + extra.sum())) < 1.0


def test_events_at_decodes_channels_and_ends_at_the_duration():
    ch = np.array([1 * SIZE * SIZE + 3 * SIZE + 7, 5])
    ev = events_at(ch, np.array([0.5, 0.2]), 1000.0)
    assert ev["t"].tolist() == [200, 1000] and ev["p"].tolist() == [0, 1]
    assert (ev["y"][1], ev["x"][1]) == (3, 7) and (ev["y"][0], ev["x"][0]) == (0, 5)


def test_content_motion_finds_a_planted_drift():
    counts = np.zeros((4, 2, 10, SIZE, SIZE))
    for k in range(10):
        counts[:, :, k, 10:14, 5 + k:8 + k] = 3.0  # a block moving right one pixel per bin
    v = content_motion(counts)
    assert np.allclose(v[:, 1], 1.0, atol=0.15) and np.allclose(v[:, 0], 0.0, atol=0.15)


def test_the_cell_hybrid_keeps_the_target_where_the_integrator_can_place_it():
    target = np.full((2, N_BINS, SIZE, SIZE), 2.0)
    mean = np.full_like(target, 1.0)
    mean[0, 0, 0, 0] = 0.0  # the integrator expects nothing here
    mean[1, 1, 1, 1] = 0.1  # ... and far too little here
    factor, left = cell_factors(target, mean)
    assert np.allclose(mean * factor + left, target)
    assert left[0, 0, 0, 0] == 2.0 and factor[0, 0, 0, 0] == 0.0
    assert np.isclose(factor[1, 1, 1, 1], RATIO_LIMIT) and np.isclose(left[1, 1, 1, 1], 2.0 - 0.1 * RATIO_LIMIT)
    assert np.count_nonzero(left) == 2


def test_the_pixel_hybrid_keeps_each_pixels_on_off_balance_and_the_targets_profile():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0.5, 1.5, (3, 2, N_BINS, SIZE, SIZE))
    mean[:, :, :, 0, 0] = 0.0  # a pixel the integrator never fires
    target = rng.uniform(0.5, 1.5, mean.shape)
    factor, left = pixel_factors(target[0], mean[0])
    assert np.all(factor[:, :, 5, 6] == factor[0, 0, 5, 6])  # one factor per pixel
    assert np.isclose((mean[0] * factor)[:, :, 5, 6].sum(), target[0, :, :, 5, 6].sum())
    assert np.allclose(left[:, :, 0, 0], target[0, :, :, 0, 0]) and np.count_nonzero(left[:, :, 1:]) == 0
    f, lo = arm_factors("hybrid_pixel", True, target, mean, np.ones((2, N_BINS, 1, 1)))
    placed = mean * f + lo
    assert np.allclose(placed.sum((0, 3, 4)), target.sum((0, 3, 4)))
    # within a pixel the factor is one number (the ON/OFF balance is the integrator's), up to the
    # time-profile correction, which is one number per polarity and bin for all pixels
    per_pixel = np.stack([pixel_factors(t, m)[0] for t, m in zip(target, mean)])
    correction = f[:, :, :, 1:, :] / per_pixel[:, :, :, 1:, :]
    assert np.allclose(correction, correction[:1, :, :, :1, :1])


def test_profile_factor_brings_the_signal_to_the_counts_per_bin():
    background = np.full((2, N_BINS, SIZE, SIZE), 0.01)
    rates = np.random.default_rng(1).uniform(0.0, 1.0, (4, 2, N_BINS, SIZE, SIZE))
    counts = rates * np.linspace(0.5, 2.0, N_BINS)[None, None, :, None, None] + background
    f = profile_factor(counts, background, rates)
    assert f.shape == (2, N_BINS, 1, 1) and np.allclose(f[0, :, 0, 0], np.linspace(0.5, 2.0, N_BINS))
    integrator_only, nothing = arm_factors("integrator", False, rates, rates, f)
    assert np.all(integrator_only == 1.0) and not nothing.any()


def test_a_saved_fit_reads_back_the_same_renderer(tmp_path):
    net = _net(_moving_right(0.5), rising=0)
    with torch.no_grad():
        net.gain += 0.3
    save_fit(tmp_path / "fit.npz", net, np.ones((5, N_BINS, 2), np.float32))
    again, d = load_fit(tmp_path / "fit.npz", net.background.numpy())
    images = torch.from_numpy(_bar())
    with torch.no_grad():
        assert torch.equal(again(images, None), net(images, None))
    assert again.rising == 0 and d.shape == (5, N_BINS, 2)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz is not an integrator fit"):
        load_fit(tmp_path / "bad.npz", net.background.numpy())


def test_integrator_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_integrator import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path), "--fit-npz", str(tmp_path / "fit.npz")])
    saved = json.loads((tmp_path / "c2st_integrator_smoke.json").read_text())
    assert set(saved["arms"]) == {a[0] for a in ARMS} and res["smoke"] is True
    assert all(0.0 <= arm["c2st"] <= 1.0 and arm["events_per_recording"] > 100 for arm in saved["arms"].values())
    nll = saved["nll_held_out_per_cell"]
    assert nll["integrator_own_path"] < nll["integrator_mean_path"]
    assert set(saved["real_residuals"]) == set(saved["arms"]["shipped renderer"]["residuals"])
    again = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path), "--fit-npz", str(tmp_path / "fit.npz")])
    assert again["nll_held_out_per_cell"]["integrator_mean_path"] == nll["integrator_mean_path"]  # read, not refitted
    net, d = load_fit(tmp_path / "fit.npz", np.zeros((2, 30, SIZE, SIZE), np.float32))
    save_fit(tmp_path / "other.npz", net, d[:3])  # as if fitted on another split
    with pytest.raises(SystemExit, match="was fitted on 3 pairs"):
        main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path), "--fit-npz", str(tmp_path / "other.npz")])
