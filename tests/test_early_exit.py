"""Early-exit inference (training/early_exit.py): streaming equals the full run, threshold edges."""

from __future__ import annotations

import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.models.zoo import build_model
from flexsnn.training.early_exit import (
    collect_cumulative_logits, cumulative_mean, early_exit_predict, early_exit_sweep, exit_steps,
    stream_logits,
)


def _speck(T: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("speck3c1fc", T=T)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # enough drive that the IAF neurons spike
    return model.eval()


def _events(T: int, B: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, 2, 34, 34, generator=g) < 0.15).float()


def test_stream_equals_full_forward_at_uniform_T():
    model = _speck(6)
    x = _events(6, 3)
    full = model(x)
    streamed = stream_logits(model, x)
    assert full.abs().sum() > 0, "fixture should make the output layer spike"
    torch.testing.assert_close(streamed, full)
    assert model.temporal_config == (6, 6, 6, 6)  # restored


def test_stream_equals_full_forward_paper_lif_static():
    torch.manual_seed(0)
    model = build_model("resnet18", width=4, image_size=32, T=4).eval()
    x = torch.randn(1, 2, 3, 32, 32)
    torch.testing.assert_close(stream_logits(model, x, T_max=4), model(x.expand(4, -1, -1, -1, -1)))


def test_threshold_zero_stops_at_first_step():
    model = _speck(6)
    x = _events(6, 5)
    pred, t_exit = early_exit_predict(model, x, 0.0)
    assert t_exit.tolist() == [1] * 5
    first = model(x)[0]
    assert pred.tolist() == first.argmax(-1).tolist()


def test_threshold_above_one_equals_full_evaluation():
    model = _speck(6)
    x = _events(6, 7, seed=3)
    pred, t_exit = early_exit_predict(model, x, 1.01)
    assert t_exit.tolist() == [6] * 7
    assert pred.tolist() == model(x).mean(0).argmax(-1).tolist()


def test_sweep_matches_streamed_decisions():
    model = _speck(6)
    x = _events(6, 8, seed=4)
    y = torch.arange(8) % 10
    cum, labels = collect_cumulative_logits(model, [(x.transpose(0, 1), y)], T_max=6)
    for th in (0.0, 0.15, 0.3, 0.9, 2.0):
        pred, t_exit = early_exit_predict(model, x, th)
        (pt,) = early_exit_sweep(cum, labels, [th])
        assert pt.mean_T == pytest.approx(t_exit.double().mean().item())
        assert pt.accuracy == pytest.approx((pred == y).double().mean().item())
        assert sum(pt.exit_histogram) == 8
    lo, hi = early_exit_sweep(cum, labels, [0.0, 5.0])
    assert lo.mean_T == 1.0 and hi.mean_T == 6.0
    assert hi.accuracy == pytest.approx((model(x).mean(0).argmax(-1) == y).double().mean().item())


def test_exit_steps_and_cumulative_mean_by_hand():
    logits = torch.tensor([[[0.0, 0.0]], [[4.0, 0.0]], [[4.0, 0.0]]])  # [T=3, B=1, K=2]
    cum = cumulative_mean(logits)
    torch.testing.assert_close(cum[:, 0, 0], torch.tensor([0.0, 2.0, 8.0 / 3.0]))
    assert exit_steps(cum, 0.5).tolist() == [1]        # softmax(0,0) = 0.5
    assert exit_steps(cum, 0.8).tolist() == [2]        # softmax(2,0)[0] = 0.88
    assert exit_steps(cum, 0.99).tolist() == [3]       # never reached: T_max


def test_mixed_config_and_wrong_T_refused():
    model = _speck(6)
    model.set_temporal_config((6, 3, 3, 3))
    with pytest.raises(ConfigError, match="uniform"):
        early_exit_predict(model, _events(6, 1), 0.5)
    model.set_uniform(6)
    with pytest.raises(ConfigError, match="T_max"):
        early_exit_predict(model, _events(4, 1), 0.5, T_max=6)
