"""The path study (``benchmarks/c2st_path.py``): the shift moves maps without blurring them, the
path-conditioned rates equal the renderer's without a path, a planted path is found again, and
the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import torch

from benchmarks._path_latent import (PathDistribution, fit_displacements, marginal_correction,
                                     path_rates_net, rates_along, shift_maps)
from benchmarks.c2st_path import ARMS, path_evidence
from flexsnn.data.learned_dvs import LearnedDVS


def _digit() -> np.ndarray:
    image = np.zeros((2, 28, 28), np.float32)
    image[0, 6:22, 12:16] = 1.0
    image[1, 8:12, 6:22] = 1.0
    return image


def test_a_whole_pixel_shift_moves_the_map_exactly_and_zero_leaves_it():
    maps = torch.rand(1, 2, 3, 34, 34)
    assert torch.allclose(shift_maps(maps, torch.zeros(1, 3, 2)), maps, atol=1e-5)
    moved = shift_maps(maps, torch.tensor([[[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]]]))
    assert torch.allclose(moved[:, :, 0, 1:], maps[:, :, 0, :-1], atol=1e-5)  # down by one
    assert torch.allclose(moved[:, :, 1, :, :-2], maps[:, :, 1, :, 2:], atol=1e-5)  # left by two


def test_a_half_pixel_shift_keeps_a_sharp_edge_sharper_than_bilinear():
    edge = torch.zeros(1, 1, 1, 34, 34)
    edge[..., 17:] = 1.0
    moved = shift_maps(edge, torch.tensor([[[0.0, 0.5]]]))[0, 0, 0, 10]
    # bilinear would give 0.5 at both pixels beside the edge; bicubic is steeper (and overshoots)
    assert moved[17] - moved[16] > 0.5 and torch.allclose(moved.sum(), edge[0, 0, 0, 10].sum() - 0.5, atol=0.1)


def test_without_a_path_the_rates_are_the_renderers():
    model = LearnedDVS()
    net = path_rates_net(model)
    images = _digit()
    rates = rates_along(net, images, np.zeros((2, model.n_bins, 2), np.float32))
    assert np.allclose(rates, model.rates(images), rtol=1e-4, atol=1e-6)


def test_a_planted_path_is_found_again_and_draws_without_one_gain_little():
    model = LearnedDVS()
    net = path_rates_net(model)
    images = np.repeat(_digit(), 3, axis=0)
    planted = np.zeros((6, model.n_bins, 2), np.float32)
    planted[:3, :, 0] = 0.25  # the first three recordings moved down by a quarter pixel throughout
    rng = np.random.default_rng(0)
    counts = rng.poisson(rates_along(net, images, planted) * 20.0).astype(np.float32)  # 20 recordings' worth
    net_bright = path_rates_net(model)
    with torch.no_grad():
        net_bright.gain += float(np.log(20.0))
        net_bright.noise += float(np.log(20.0))
    found, gain = fit_displacements(net_bright, images, counts, steps=60)
    assert abs(found[:3, 5:25, 0].mean() - 0.25) < 0.06 and abs(found[3:, 5:25, 0].mean()) < 0.03
    assert gain[:3].mean() > 5 * gain[3:].mean()


def test_path_distribution_and_correction():
    rng = np.random.default_rng(1)
    paths = rng.normal(0.0, 0.2, (400, 30, 2)).cumsum(1) / 5
    dist = PathDistribution.of(paths)
    drawn = dist.sample(4000, np.random.default_rng(2))
    assert drawn.shape == (4000, 30, 2)
    assert np.allclose(drawn.std(0), paths.std(0), rtol=0.15)
    assert np.allclose(dist.sample(10, rng, scale=0.0), paths.mean(0))
    marginal = rng.uniform(0.5, 2.0, (50, 2, 30, 34, 34))
    real = marginal * 1.3
    corrected = marginal * marginal_correction(real, marginal)
    assert np.allclose(corrected.sum((0, 3, 4)), real.sum((0, 3, 4)), rtol=0.02)
    evidence = path_evidence(paths, np.ones(400))
    assert evidence["dy"]["mean_next_bin_correlation"] > 0.5


def test_path_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_path import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_path_smoke.json").read_text())
    assert set(saved["arms"]) == {a[0] for a in ARMS} and res["smoke"] is True
    assert saved["evidence"]["real"]["gain_nats_per_recording"] > saved["evidence"]["null"]["gain_nats_per_recording"]
    assert all(0.0 <= arm["c2st"] <= 1.0 for arm in saved["arms"].values())
