"""Losses against hand-computed values; TMC's gradient routing and numerical safety."""

from __future__ import annotations

import math

import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.training.losses import LOSSES, TETLoss, TMCLoss, build_loss

LN3 = math.log(3.0)


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """T=2, B=1, K=2: O_0 = [0, 0] (p=[.5,.5]), O_1 = [ln 3, 0] (p=[.75,.25]); target 0."""
    logits = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]]], dtype=torch.float64)
    return logits, torch.tensor([0])


def test_mean_ce_is_ce_of_time_mean():
    logits, y = _tiny()
    # mean logits [ln3/2, 0] -> p_target = sqrt3/(sqrt3+1)
    expected = math.log(1.0 + 1.0 / math.sqrt(3.0))
    assert build_loss("ce")(logits, y).item() == pytest.approx(expected, rel=1e-12)


def test_step_ce_is_mean_of_per_step_ce():
    logits, y = _tiny()
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert build_loss("ce-step")(logits, y).item() == pytest.approx(expected, rel=1e-12)


def test_tet_hand_computed():
    logits, y = _tiny()
    ce = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    mse = (1.0 + 1.0 + (LN3 - 1.0) ** 2 + 1.0) / 4  # all 4 elements vs phi=1
    loss = build_loss("tet", lam=0.5, phi=1.0)(logits, y)
    assert loss.item() == pytest.approx(0.5 * ce + 0.5 * mse, rel=1e-12)
    # defaults are lam=1e-3, phi=1
    assert TETLoss() == TETLoss(lam=1e-3, phi=1.0)
    default = build_loss("tet")(logits, y).item()
    assert default == pytest.approx((1 - 1e-3) * ce + 1e-3 * mse, rel=1e-12)


def test_tmc_hand_computed():
    logits, y = _tiny()
    ce = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    # t=0: conf=.5, theta=1, lam_0=1 -> 1 ; t=1: cum [ln3/2, 0], theta=sqrt3, lam_1=1/2 -> 3**0.25
    expected = ce + (1.0 + 3.0 ** 0.25) / 2
    assert build_loss("tmc")(logits, y).item() == pytest.approx(expected, rel=1e-10)


def test_tmc_confidence_is_batch_mean():
    # sample 2 mirrors sample 1 at t=1, so the batch-mean conf is 0.5 at both steps: theta = 1
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[LN3, 0.0], [0.0, LN3]]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    reg = TMCLoss().regulariser(logits, y)
    assert torch.allclose(reg, torch.ones(2, dtype=torch.float64))


def test_tmc_batch_hand_computed():
    # B=2, T=2, K=2, targets [0, 1]. t=0: p = [.5,.5] and [.75,.25] -> p_target = .5, .25:
    # conf_0 = .375, other_0 = .625, theta_0 = .6, lam_0 = 1.
    # t=1: O_1 = [0,0] both -> cum = [0,0] and [ln3/2, 0] -> p_target = .5, 1/(1+sqrt3):
    # conf_1 = (.5 + 1/(1+sqrt3))/2, theta_1 = conf_1/(1-conf_1), lam_1 = 1/2.
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    ce = (math.log(2.0) + math.log(4.0) + 2 * math.log(2.0)) / 4  # mean over the 4 (t, b) pairs
    conf1 = (0.5 + 1.0 / (1.0 + math.sqrt(3.0))) / 2
    expected = ce + (0.6 + math.sqrt(conf1 / (1.0 - conf1))) / 2
    assert build_loss("tmc")(logits, y).item() == pytest.approx(expected, rel=1e-12)


def _tmc_loop_reference(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TMC written step by step as in the authors' code (zju-bmi-lab/TMC): one-hot masks, a loop over t,
    batch means of the target and other-class mass, theta not detached, the sum over t divided by T."""
    t_out = outputs.shape[0]
    gt = torch.zeros_like(outputs[0]).scatter_(1, labels.view(-1, 1), 1.0)
    past = outputs.detach()
    total = outputs.new_zeros(())
    for t in range(t_out):
        mean_out = torch.softmax((past[:t].sum(0) + outputs[t]) / (t + 1), dim=1)
        target_mass = (mean_out * gt).sum(1).mean()
        other_mass = (mean_out * (1.0 - gt)).sum(1).mean()
        total = total + torch.nn.functional.cross_entropy(outputs[t], labels)
        total = total + (target_mass / other_mass) ** ((t_out - t) / t_out)
    return total / t_out


def test_tmc_matches_authors_loop_in_value_and_gradient():
    torch.manual_seed(3)
    logits = (2.0 * torch.randn(4, 6, 10, dtype=torch.float64)).requires_grad_(True)
    y = torch.tensor([0, 3, 9, 2, 2, 7])
    ours = build_loss("tmc")(logits, y)
    ref = _tmc_loop_reference(logits, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def test_tmc_gradient_flows_only_through_current_step():
    torch.manual_seed(0)
    t_out, b, k = 4, 3, 5
    logits = torch.randn(t_out, b, k, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 4, 0])
    reg = TMCLoss().regulariser(logits, y)
    for t in range(t_out):
        (g,) = torch.autograd.grad(reg[t], logits, retain_graph=True)
        for i in range(t_out):
            if i == t:
                assert g[i].abs().max() > 1e-6, f"step {t} term must reach O_{t}"
            else:
                assert torch.count_nonzero(g[i]) == 0, f"step {t} term leaks into O_{i}"
    # without the detach the cumulative term would reach earlier steps: the test above is not vacuous
    cum = torch.cumsum(logits, 0)[2] / 3
    conf = torch.softmax(cum, -1).gather(-1, y.view(-1, 1)).mean()
    (g_full,) = torch.autograd.grad(conf / (1 - conf), logits)
    assert g_full[0].abs().max() > 1e-6


def test_tmc_gradient_of_total_loss_equals_own_step_terms():
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 3])
    (g,) = torch.autograd.grad(build_loss("tmc")(logits, y), logits)
    # step-0 gradient from its own terms only: (CE(O_0) + theta_0^1) / T
    o0 = logits.detach()[0].clone().requires_grad_(True)
    p = torch.softmax(o0, -1).gather(-1, y.view(-1, 1)).mean()
    own = (torch.nn.functional.cross_entropy(o0, y) + p / (1 - p)) / 3
    (g0,) = torch.autograd.grad(own, o0)
    assert torch.allclose(g[0], g0, atol=1e-12)


def _minimise_over_free_logits(name: str, t_out: int, steps: int = 500) -> torch.Tensor:
    """Batch-mean confidence of the cumulative-mean prediction per step, float ``[T]``, at the minimum of the
    loss over free logits ``[T, B, K]`` (a model that can fit anything, every sample correct)."""
    torch.manual_seed(0)
    logits = (0.1 * torch.randn(t_out, 8, 5, dtype=torch.float64)).requires_grad_(True)
    y = torch.arange(8) % 5
    opt = torch.optim.Adam([logits], lr=0.05)
    loss_fn = build_loss(name)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(logits, y).backward()
        opt.step()
    cum = torch.cumsum(logits.detach(), 0) / torch.arange(1, t_out + 1, dtype=torch.float64).view(-1, 1, 1)
    return torch.softmax(cum, -1).max(-1).values.mean(1)


def test_tmc_optimum_caps_confidence_below_one():
    # TMC's penalty has a data-independent optimum: at t=0 (lambda=1) d/dp [-log p + p/(1-p)] = 0 gives
    # p = (1-p)^2, p = (3 - sqrt 5)/2 = 0.382; later steps rise (0.50, 0.61, 0.72 at T=4) but stay far
    # below 1 even when every training sample is classified right. CE and TET go to 1.
    conf = _minimise_over_free_logits("tmc", 4)
    assert conf[0].item() == pytest.approx((3 - math.sqrt(5)) / 2, abs=1e-6)
    assert torch.all(conf[1:] > conf[:-1]) and conf[-1].item() == pytest.approx(0.7213, abs=1e-3)
    assert _minimise_over_free_logits("ce", 4, steps=300)[-1].item() > 0.99
    assert _minimise_over_free_logits("tet", 4, steps=300)[-1].item() > 0.99


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("t_out", [1, 3, 7])
def test_any_t_out_and_finite_at_confidence_one(name, t_out):
    b, k = 4, 10
    logits = torch.full((t_out, b, k), -200.0)
    y = torch.tensor([0, 3, 9, 2])
    logits[:, torch.arange(b), y] = 200.0  # softmax conf == 1.0 exactly in float32
    logits.requires_grad_(True)
    loss = build_loss(name)(logits, y)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_tmc_finite_when_confident_and_bounded_by_eps():
    logits = torch.zeros(2, 1, 3)
    logits[:, 0, 0] = 60.0  # other mass ~ 2*exp(-60) ~ 1.7e-26, far below float eps
    loss = TMCLoss(eps=1e-6)(logits, torch.tensor([0]))
    assert torch.isfinite(loss)
    # theta capped at ~1/eps: (1e6 ** 1 + 1e6 ** 0.5) / 2
    assert loss.item() == pytest.approx((1e6 + 1e3) / 2, rel=1e-3)


@pytest.mark.parametrize("name", LOSSES)
def test_finite_when_target_probability_underflows(name):
    logits = torch.zeros(3, 2, 4)
    logits[:, :, 1] = 300.0  # p_target == 0 in float32 for every sample and step
    logits.requires_grad_(True)
    loss = build_loss(name)(logits, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_build_loss_errors():
    with pytest.raises(ConfigError, match="loss"):
        build_loss("focal")
    with pytest.raises(ConfigError, match="lam"):
        build_loss("tet", lam=2.0)
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("tmc", gamma=1.0)
    with pytest.raises(ConfigError, match=r"\[T, B, K\]"):
        build_loss("ce")(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="target"):
        build_loss("ce")(torch.zeros(2, 3, 4), torch.tensor([0, 1]))
    assert build_loss("TMC").name == "tmc" and build_loss("ce_step").name == "ce-step"
