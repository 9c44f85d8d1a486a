"""Rate-based backprop: exact at T = 1, close to BPTT in the paper's regime, modes agree, MTT works."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import make_neuron, neuron_step
from flexsnn.models.tfsnn import TFSNN, Stage
from flexsnn.training.losses import build_loss
from flexsnn.training.rate_backprop import eligibility_step, rate_loss_and_backward


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _bptt(model, x, y, loss_fn):
    model.zero_grad()
    loss_fn(model(x), y).backward()
    model.reset()
    return _grads(model)


def _rate(model, x, y, loss_fn, mode="rate_M"):
    model.zero_grad()
    rate_loss_and_backward(model, x, y, loss_fn, mode=mode)
    return _grads(model)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))


def _small_net(profile: str, *, bn: bool, decay: float | None = None, T: int = 4) -> TFSNN:
    over = {} if decay is None else {"decay": decay}

    def conv(c_in, c_out):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
        layers += [nn.BatchNorm2d(c_out)] if bn else []
        return layers + [make_neuron(profile, **over), nn.AvgPool2d(2)]

    stages = [Stage("a", conv(2, 8)), Stage("b", conv(8, 16)),
              Stage("c", [nn.Flatten(), nn.Linear(16 * 4 * 4, 10, bias=False)])]
    return TFSNN(stages, neuron_profile=profile, num_classes=10, input_shape=(2, 16, 16), default_T=T)


@pytest.mark.parametrize("profile", ["paper-lif", "speck-iaf"])
@pytest.mark.parametrize("loss", ["ce", "tmc"])
def test_exact_bptt_gradient_single_layer_T1(profile, loss):
    torch.manual_seed(0)
    model = TFSNN([Stage("fc", [nn.Flatten(), nn.Linear(8, 5, bias=False), make_neuron(profile)])],
                  neuron_profile=profile, num_classes=5, input_shape=(2, 2, 2), default_T=1)
    with torch.no_grad():
        model.stages[0].layers[1].weight.mul_(3.0)
    x = torch.rand(1, 16, 2, 2, 2) * 2
    y = torch.randint(0, 5, (16,))
    twin = copy.deepcopy(model)
    g_bptt = _bptt(model, x, y, build_loss(loss))
    g_rate = _rate(twin, x, y, build_loss(loss))
    w = "stages.0.layers.1.weight"
    assert g_bptt[w].abs().max() > 0
    torch.testing.assert_close(g_rate[w], g_bptt[w], rtol=1e-6, atol=1e-7)


def test_eligibility_step_matches_neuron_step_and_is_d_rate_dx():
    """Spikes equal the neuron's; for a constant input the trace is d(mean rate)/dx of BPTT."""
    for profile in ["paper-lif", "speck-iaf"]:
        config = make_neuron(profile, decay=0.6 if profile == "paper-lif" else 1.0).config
        torch.manual_seed(3)
        x = (torch.rand(64) * 1.5).requires_grad_(True)
        v = torch.zeros(64)
        v_ref = torch.zeros(64)
        factor, elig, rate = 1.0, 0.0, 0.0
        T = 5
        for _ in range(T):
            s, v, contribution, factor = eligibility_step(x.detach(), v, factor, config)
            s_ref, v_ref = neuron_step(x, v_ref, config)
            assert torch.equal(s, s_ref.detach()) and torch.equal(v, v_ref.detach())
            elig = elig + contribution / T
            rate = rate + s_ref / T
        (g,) = torch.autograd.grad(rate.sum(), x)  # BPTT derivative of the mean rate (same x every step)
        torch.testing.assert_close(elig, g, rtol=1e-5, atol=1e-6)


def test_close_to_bptt_on_small_conv_net_lambda_02():
    """The paper's regime: static input repeated over T, leak 0.2, BN: per-layer cosine >= 0.8."""
    torch.manual_seed(1)
    T = 4
    model = _small_net("paper-lif", bn=True, decay=0.2, T=T).train()
    x = (torch.rand(1, 32, 2, 16, 16) < 0.5).float().expand(T, -1, -1, -1, -1).contiguous()
    y = torch.randint(0, 10, (32,))
    twin = copy.deepcopy(model)
    g_bptt = _bptt(model, x, y, build_loss("ce"))
    g_rate = _rate(twin, x, y, build_loss("ce"))
    assert set(g_bptt) == set(g_rate) and len(g_rate) == 7
    for name in g_bptt:
        assert g_bptt[name].abs().max() > 0, name
        assert _cos(g_bptt[name], g_rate[name]) >= 0.8, name


def test_close_to_bptt_speck_iaf_event_input():
    torch.manual_seed(2)
    T = 6
    model = _small_net("speck-iaf", bn=False, T=T).train()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    x = (torch.rand(T, 32, 2, 16, 16) < 0.3).float()
    y = torch.randint(0, 10, (32,))
    twin = copy.deepcopy(model)
    g_bptt = _bptt(model, x, y, build_loss("tet"))
    g_rate = _rate(twin, x, y, build_loss("tet"))
    for name in g_bptt:
        assert _cos(g_bptt[name], g_rate[name]) >= 0.8, name


def test_rate_m_and_rate_s_agree():
    torch.manual_seed(4)
    x = (torch.rand(5, 16, 2, 16, 16) < 0.4).float()
    y = torch.randint(0, 10, (16,))
    # without BN the two modes compute the same thing (uniform and per-stage T)
    for config in [(5, 5, 5), (5, 3, 4)]:
        model = _small_net("paper-lif", bn=False, decay=0.2).train()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        model.set_temporal_config(config)
        twin = copy.deepcopy(model)
        g_m = _rate(model, x, y, build_loss("tmc"), mode="rate_M")
        g_s = _rate(twin, x, y, build_loss("tmc"), mode="rate_S")
        assert any(g.abs().max() > 0 for g in g_m.values())
        for name in g_m:
            torch.testing.assert_close(g_s[name], g_m[name], rtol=1e-5, atol=1e-7)
    # with BN, single-step normalises each step with its own statistics: close, not equal
    model = _small_net("paper-lif", bn=True, decay=0.2, T=4).train()
    xs = x[:1].expand(4, -1, -1, -1, -1).contiguous()
    twin = copy.deepcopy(model)
    g_m = _rate(model, xs, y, build_loss("ce"), mode="rate_M")
    g_s = _rate(twin, xs, y, build_loss("ce"), mode="rate_S")
    for name in g_m:
        assert _cos(g_m[name], g_s[name]) >= 0.95, name


def test_mtt_per_stage_T_values_exact_and_state_restored():
    torch.manual_seed(5)
    model = _small_net("speck-iaf", bn=True, T=4).train()
    model.set_temporal_config((6, 4, 3))  # downsample by sums (6 -> 4: uneven groups), then 4 -> 3
    x = (torch.rand(7, 8, 2, 16, 16) < 0.3).float()
    y = torch.randint(0, 10, (8,))
    outputs = []
    handle = model.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone()))
    bn = model.stages[0].layers[1]
    before = bn.running_mean.clone()
    result = rate_loss_and_backward(model, x, y, build_loss("ce"))
    handle.remove()
    assert len(outputs) == 2 and outputs[0].shape == (3, 8, 10) and outputs[1].shape == (1, 8, 10)
    torch.testing.assert_close(outputs[1][0], outputs[0].mean(0))  # rate pass value = true mean output
    torch.testing.assert_close(result.logits, outputs[0])
    assert result.loss.item() == pytest.approx(build_loss("ce")(outputs[0], y).item())
    assert bn.num_batches_tracked.item() == 1 and not torch.equal(bn.running_mean, before)
    assert model.temporal_config == (6, 4, 3)
    assert all(n.strategy is None and n.v is None for n in model.modules() if hasattr(n, "strategy"))
    assert all(p.grad is not None for p in model.parameters())


def test_errors():
    model = _small_net("paper-lif", bn=False).eval()
    x = torch.zeros(2, 2, 2, 16, 16)
    with pytest.raises(ConfigError, match="training"):
        rate_loss_and_backward(model, x, torch.tensor([0, 1]), build_loss("ce"))
    with pytest.raises(ConfigError, match="rate_mode"):
        rate_loss_and_backward(model.train(), x, torch.tensor([0, 1]), build_loss("ce"), mode="rate_X")


def _capture_rate_pass_output(model: TFSNN) -> tuple[list[torch.Tensor], object]:
    outputs: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone()))
    return outputs, handle


def test_loss_gradient_scaled_by_one_over_T_hand_computed():
    """Official code (CustomEvaluator): rate mode divides the loss gradient by T.

    Linear readout W = 0 on x_t = [1, 0] for T = 2 steps, label 0: ō = 0, softmax = [.5, .5],
    dL/dō = [-.5, .5], so dL/dW = [[-.5, 0], [.5, 0]] (BPTT, mean-CE) and rate mode gives half.
    """
    model = TFSNN([Stage("fc", [nn.Flatten(), nn.Linear(2, 2, bias=False)])], neuron_profile="paper-lif",
                  num_classes=2, input_shape=(2, 1, 1), default_T=2).train()
    nn.init.zeros_(model.stages[0].layers[1].weight)
    x = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1).expand(2, 1, 2, 1, 1).contiguous()
    y = torch.tensor([0])
    w = "stages.0.layers.1.weight"
    expected = torch.tensor([[-0.5, 0.0], [0.5, 0.0]])
    torch.testing.assert_close(_bptt(copy.deepcopy(model), x, y, build_loss("ce"))[w], expected)
    for mode in ("rate_M", "rate_S"):
        model.zero_grad()
        res = rate_loss_and_backward(model, x, y, build_loss("ce"), mode=mode)
        torch.testing.assert_close(_grads(model)[w], expected / 2)
        assert res.loss.item() == pytest.approx(float(torch.log(torch.tensor(2.0))))  # value unscaled
        model.zero_grad()
        rate_loss_and_backward(model, x, y, build_loss("ce"), mode=mode, grad_scale="1")
        torch.testing.assert_close(_grads(model)[w], expected)
    with pytest.raises(ConfigError, match="grad_scale"):
        rate_loss_and_backward(model, x, y, build_loss("ce"), grad_scale="T")


def test_rate_s_bn_variance_is_harmonic_mean_hand_computed():
    """rate_S: BN's rate pass divides by sqrt(1/mean_t(1/(var_t+eps)) + eps) (official code);
    rate_M by the variance of the whole [T*B] batch.

    Two samples, two steps, one channel: step 0 = [0, 2] (mean 1, var 1), step 1 = [0, 4]
    (mean 2, var 4). Rate pass input x̄ = [0, 3]; mean 1.5 in both modes. rate_S variance:
    1 / ((1/1 + 1/4) / 2) = 1.6 (the arithmetic mean would be 2.5); rate_M: var of [0, 2, 0, 4] = 2.75.
    """
    eps = 1e-5
    model = TFSNN([Stage("bn", [nn.Flatten(), nn.BatchNorm1d(1, affine=False, eps=eps)])],
                  neuron_profile="paper-lif", num_classes=1, input_shape=(1, 1, 1), default_T=2).train()
    x = torch.tensor([[0.0, 2.0], [0.0, 4.0]]).view(2, 2, 1, 1, 1)
    # 1.5 / sqrt(1.6) = 1.18585 (rate_S), 1.5 / sqrt(2.75) = 0.90453 (rate_M); eps moves the 5th digit
    for mode, value in (("rate_S", 1.18585), ("rate_M", 0.90453)):
        outputs, handle = _capture_rate_pass_output(model)
        rate_loss_and_backward(model, x, torch.tensor([0, 0]), build_loss("ce"), mode=mode)
        handle.remove()
        torch.testing.assert_close(outputs[-1].flatten(), torch.tensor([-value, value]), rtol=0, atol=2e-5)
