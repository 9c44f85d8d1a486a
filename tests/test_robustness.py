"""Robustness analyses (training/robustness.py): noise sweeps and gradient norms."""

from __future__ import annotations

import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.models.zoo import build_model
from flexsnn.training.losses import build_loss
from flexsnn.training.robustness import batch_accuracy, gradient_norms, noise_sweep, perturbed_weights


def _model_and_batches(n_batches: int = 2, B: int = 6, T: int = 4):
    torch.manual_seed(0)
    model = build_model("speck3c1fc", T=T, batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    g = torch.Generator().manual_seed(2)
    batches = [((torch.rand(B, T, 2, 34, 34, generator=g) < 0.2).float(), torch.randint(0, 10, (B,), generator=g))
               for _ in range(n_batches)]
    return model.eval(), batches


@pytest.mark.parametrize("kind", ["weight", "input"])
def test_sigma_zero_reproduces_clean_accuracy(kind):
    model, batches = _model_and_batches()
    # labels = the clean predictions, so the clean accuracy is 1 and any change shows
    batches = [(x, model(x.transpose(0, 1)).mean(0).argmax(-1)) for x, _ in batches]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    curve = noise_sweep(model, batches, [0.0, 5.0], kind=kind, repeats=3, seed=1)
    assert curve.clean == 1.0
    assert curve.accuracy[0] == (1.0, 1.0, 1.0)
    assert curve.mean[1] < 1.0, "large noise should change some predictions"
    assert curve.min[1] <= curve.mean[1] <= curve.max[1]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # weights restored
    again = noise_sweep(model, batches, [0.0, 5.0], kind=kind, repeats=3, seed=1)
    assert again.accuracy == curve.accuracy  # seeded


def test_variance_axis_is_the_sigma_sweep_at_sqrt():
    """axis="variance" (the paper's sigma^2): value 4.0 draws exactly what sigma 2.0 draws."""
    model, batches = _model_and_batches(n_batches=1)
    by_var = noise_sweep(model, batches, [0.0, 0.25, 4.0], kind="weight", repeats=2, seed=3, axis="variance")
    by_sigma = noise_sweep(model, batches, [0.0, 0.5, 2.0], kind="weight", repeats=2, seed=3)
    assert by_var.accuracy == by_sigma.accuracy and by_var.sigma == (0.0, 0.5, 2.0)
    doc = by_var.to_dict()
    assert doc["axis"] == "variance" and doc["variance"] == [0.0, 0.25, 4.0] and doc["sigma"] == [0.0, 0.5, 2.0]
    with pytest.raises(ConfigError, match="axis"):
        noise_sweep(model, batches, [0.1], axis="std")
    with pytest.raises(ConfigError, match="variances"):
        noise_sweep(model, batches, [-0.1], axis="variance")


def test_perturbed_weights_relative_scale_and_restore():
    model, _ = _model_and_batches()
    w = model.stages[0].layers[0].weight
    orig = w.detach().clone()
    with perturbed_weights(model, 0.5, torch.Generator().manual_seed(0), scale="relative"):
        delta = (w - orig).detach()
        assert 0.3 * orig.std() < delta.std() < 0.7 * orig.std()
        assert all(bn.weight.equal(torch.ones_like(bn.weight)) for bn in model.modules()
                   if isinstance(bn, torch.nn.BatchNorm2d))  # BN untouched
    torch.testing.assert_close(w.detach(), orig, rtol=0, atol=0)
    with pytest.raises(ConfigError):
        noise_sweep(model, [], [0.1], kind="bias")


def test_gradient_norms_match_whole_set_computation():
    model, batches = _model_and_batches(n_batches=3, B=4)
    got = gradient_norms(model, batches, layers="conv")
    assert got.n == 12 and set(got.per_layer) == {"stages.0.layers.0", "stages.1.layers.0", "stages.2.layers.0"}
    # oracle: one batch holding the whole set; mean CE; autograd w.r.t. the conv weights
    x = torch.cat([b[0] for b in batches]).transpose(0, 1)
    y = torch.cat([b[1] for b in batches])
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    loss = build_loss("ce")(model(x), y)
    grads = torch.autograd.grad(loss, convs)
    expect_w = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    assert got.grad_norm_w == pytest.approx(float(expect_w), rel=1e-5)
    assert got.grad_norm_w > 0
    # per-sample input gradients
    norms = []
    for i in range(12):
        xi = x[:, i:i + 1].clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(build_loss("ce")(model(xi), y[i:i + 1]), xi)
        norms.append(float(gx.norm()))
    assert got.grad_norm_x == pytest.approx(sum(norms) / 12, rel=1e-5)
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_norms_need_the_layer_kind():
    model = build_model("seqfc")
    with pytest.raises(ConfigError, match="layers='all'"):
        gradient_norms(model, [(torch.rand(2, 28, 1, 1, 28), torch.tensor([1, 2]))])
    got = gradient_norms(model, [(torch.rand(2, 28, 1, 1, 28), torch.tensor([1, 2]))], layers="all")
    assert got.grad_norm_w > 0 and got.layers == "all"


def test_batch_accuracy_counts():
    model, batches = _model_and_batches()
    preds = [model(x.transpose(0, 1)).mean(0).argmax(-1) for x, _ in batches]
    assert batch_accuracy(model, [(x, p) for (x, _), p in zip(batches, preds)]) == 1.0


@pytest.mark.slow
def test_robustness_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"
    spec = importlib.util.spec_from_file_location("_bench_robustness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "robustness.json").read_text())
    for name in ("sdt", "mtt"):
        for kind in ("weight_noise", "input_noise"):
            assert set(data[name][kind]) >= {"mean", "min", "max"}
        assert len(data[name]["weight_noise"]["mean"]) == len(data["sigma"])
        assert data[name]["weight_noise"]["mean"][0] == data[name]["clean_accuracy"]
        assert data[name]["grad_norm_w"] > 0 and data[name]["grad_norm_x"] > 0
    assert "machine" in data and (tmp_path / "robustness_weight.png").stat().st_size > 0
