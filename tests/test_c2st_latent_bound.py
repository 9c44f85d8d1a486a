"""The latent-bound study (``benchmarks/c2st_latent_bound.py``): each latent at zero leaves the
renderer's rates, a displacement field equal everywhere is a path, the registration moves and
scales the image as documented, a planted registration and gain are found again, and the
script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks._path_latent import displace_maps, path_rates_net, shift_maps
from benchmarks._recording_latent import (KINDS, field_displacement, fit_latents, latent_prior,
                                          rates_given, warp_images, zero_latent)
from flexsnn.data.learned_dvs import LearnedDVS


def _digits(n: int = 2) -> np.ndarray:
    image = np.zeros((2, 28, 28), np.float32)
    image[0, 6:22, 12:16] = 1.0
    image[1, 8:12, 6:22] = 1.0
    return np.repeat(image, n // 2, axis=0)


def _torch(latent: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in latent.items()}


def test_zero_latents_give_the_renderers_rates_and_zero_prior():
    model = LearnedDVS()
    net = path_rates_net(model)
    images = _digits()
    zero = zero_latent(len(images), model.n_bins)
    expected = model.rates(images)
    assert np.allclose(rates_given(net, images, zero, KINDS), expected, rtol=1e-4, atol=1e-6)
    assert np.allclose(rates_given(net, images, zero, ()), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(latent_prior(_torch(zero), KINDS), torch.zeros(len(images)))


def test_a_uniform_field_is_a_path_and_a_displacement_moves_whole_pixels_exactly():
    maps = torch.rand(2, 2, 6, 34, 34)
    path = torch.rand(2, 6, 2)
    field = path[:, :3, :, None, None].expand(2, 3, 2, 5, 5).contiguous()  # segment s = bin s's
    per_bin = field_displacement(field, 3)  # 3 bins, one per segment
    assert torch.allclose(displace_maps(maps[:, :, :3], per_bin), shift_maps(maps[:, :, :3], path[:, :3]), atol=1e-5)
    one_right = torch.zeros(2, 6, 2, 34, 34)
    one_right[:, :, 1] = 1.0
    assert torch.allclose(displace_maps(maps, one_right)[..., 1:], maps[..., :-1], atol=1e-5)


def test_registration_moves_and_scales_the_image_as_documented():
    image = torch.zeros(1, 28, 28)
    image[0, 10:18, 12:16] = 1.0
    moved = warp_images(image, torch.tensor([[0.0, 0.0, 2.0, -1.0]]))  # down 2, left 1
    assert torch.allclose(moved[0, 12:20, 11:15], image[0, 10:18, 12:16], atol=1e-5)
    assert torch.allclose(moved.sum(), image.sum(), atol=1e-4)
    wider = warp_images(image, torch.tensor([[0.0, float(np.log(2.0)), 0.0, 0.0]]))
    assert 1.8 < float(wider.sum() / image.sum()) < 2.2  # twice as wide, about the centre
    row = wider[0, 14]  # the bar, 4 px wide at x 12-15, is now 8 px wide at x 10-17
    assert row[11:17].min() > 0.8 and row[:8].abs().max() < 0.1 and row[20:].abs().max() < 0.1


@pytest.mark.parametrize("kind, planted", [("registration", (0.0, 0.0, 0.4, 0.0)), ("gain", 0.3)])
def test_a_planted_latent_is_found_again(kind, planted):
    model = LearnedDVS()
    net = path_rates_net(model)
    images = _digits(4)
    truth = zero_latent(4, model.n_bins)
    truth[kind][:2] = planted
    rng = np.random.default_rng(0)
    counts = rng.poisson(rates_given(net, images, truth, (kind,)) * 20.0).astype(np.float32)
    bright = path_rates_net(model)
    with torch.no_grad():  # 20 recordings' worth of events, so the fit sees the latent clearly
        bright.gain += float(np.log(20.0))
        bright.noise += float(np.log(20.0))
    found, gain = fit_latents(bright, images, counts, (kind,), steps=80)
    if kind == "registration":
        assert abs(found[kind][:2, 2].mean() - 0.4) < 0.1 and np.abs(found[kind][2:, 2]).max() < 0.1
    else:
        assert abs(found[kind][:2].mean() - 0.3) < 0.08 and np.abs(found[kind][2:].mean()) < 0.05
    assert gain[:2].mean() > 5 * max(gain[2:].mean(), 1.0)


def test_unknown_latent_kinds_are_refused():
    model = LearnedDVS()
    with pytest.raises(ValueError, match="unknown latent kinds.*'tilt'"):
        fit_latents(path_rates_net(model), _digits(), np.zeros((2, 2, model.n_bins, 34, 34)), ("tilt",))


def test_the_script_runs_in_smoke_mode(tmp_path):
    from benchmarks._s2r_data import DEFAULT_REAL
    from benchmarks.c2st_latent_bound import FAMILIES, main

    if not DEFAULT_REAL.exists():
        pytest.skip(f"real recordings not found at {DEFAULT_REAL}")
    result = main(["--smoke", "--out", str(tmp_path), "--null-n", "4"])
    saved = json.loads((tmp_path / "c2st_latent_bound_smoke.json").read_text())
    assert set(saved["arms"]) == {"shipped renderer", *(n for n, _k in FAMILIES),
                                  "oracle: each real recording's own counts, drawn exactly"}
    for name, _kinds in FAMILIES:
        arm = saved["arms"][name]
        assert 0.0 <= arm["c2st"] <= 1.0 and set(arm["views"]) == {"count_image", "time_profile_T30"}
        assert {"gain_nats_fit", "gain_nats_held_out", "gain_nats_null"} <= set(arm["evidence"])
    oracle = saved["arms"]["oracle: each real recording's own counts, drawn exactly"]
    assert abs(oracle["events_per_recording"] / saved["events_per_real_recording"] - 1) < 0.02
    assert result["steps"] == 3
