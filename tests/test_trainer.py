"""Trainer: MTT gradient = sum of per-configuration gradients; exact resume; outputs."""

from __future__ import annotations

import json

import pytest
import torch

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.models.checkpoint import load_checkpoint, load_model
from flexsnn.models.zoo import build_model
from flexsnn.training.losses import build_loss
from flexsnn.training.schemes import SchemeConfig
from flexsnn.training.trainer import TrainConfig, bptt_step, get_step_fn, train, train_step


@pytest.fixture(scope="module")
def tiny_data():
    from flexsnn.data.registry import load_event_dataset

    return (load_event_dataset("saccade-mnist", split="train", limit=32, seed=0),
            load_event_dataset("saccade-mnist", split="test", limit=16, seed=0))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_mtt_step_gradient_is_sum_of_per_config_gradients():
    torch.manual_seed(0)
    model = build_model("speck3c1fc", batch_norm=False)
    model.train()
    x = (torch.rand(4, 2, 2, 34, 34) < 0.3).float() * 2
    y = torch.tensor([1, 2])
    loss_fn = build_loss("ce")
    configs = [(4, 3, 2, 4), (4, 1, 4, 2), (4, 4, 4, 4)]
    expected: dict[str, torch.Tensor] = {}
    for cfg in configs:
        model.zero_grad(set_to_none=True)
        model.set_temporal_config(cfg)
        loss_fn(model(x), y).backward()
        for n, g in _grads(model).items():
            expected[n] = expected.get(n, 0) + g
    assert any(float(g.abs().sum()) > 0 for g in expected.values())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    stats = train_step(model, x, y, configs, loss_fn, bptt_step, opt)
    got = _grads(model)
    assert set(got) == set(expected)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-6)
        # exactly one optimizer step with the summed gradient
        torch.testing.assert_close(dict(model.named_parameters())[n].detach(), before[n] - 0.5 * expected[n])
    assert stats.seen == 6 and stats.configs == configs


def test_step_fn_registry():
    assert get_step_fn("bptt") is bptt_step
    with pytest.raises(ConfigError):
        get_step_fn("evolution")


def test_config_validation_and_round_trip():
    cfg = TrainConfig(T=6, scheme=SchemeConfig(name="mtt", T=6, s=2), epochs=2)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError) as info:
        TrainConfig(T=6, scheme=SchemeConfig(name="sdt", T=10))
    assert info.value.field == "scheme.T"
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError):
        TrainConfig(phase="bias_removal")


def _cfg(**kw):
    base = dict(T=4, scheme=SchemeConfig(name="mtt", T=4, s=2), epochs=2, batch_size=16, lr=3e-3,
                augment=True, seed=3, model_kwargs={"T": 4})
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_data):
    train_ds, test_ds = tiny_data
    full = train(_cfg(), out_dir=tmp_path / "full", train_data=train_ds, test_data=test_ds)
    # "interrupted" run: same config, stopped after epoch 1 (state of a 2-epoch run at epoch 1)
    cfg = _cfg()
    part_dir = tmp_path / "part"
    import flexsnn.training.trainer as tr

    class Stop(Exception):
        pass

    original = tr.write_metrics

    def write_then_stop(out, history):
        original(out, history)
        raise Stop

    tr.write_metrics = write_then_stop
    try:
        with pytest.raises(Stop):
            train(cfg, out_dir=part_dir, train_data=train_ds, test_data=test_ds)
    finally:
        tr.write_metrics = original
    assert load_checkpoint(part_dir / "last.safetensors")[1].epoch == 1
    resumed = train(cfg, out_dir=part_dir, resume=True, train_data=train_ds, test_data=test_ds)
    a, _ = load_checkpoint(tmp_path / "full" / "final.safetensors")
    b, _ = load_checkpoint(part_dir / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    lines = (part_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (part_dir / "metrics.csv").read_text().count("\n") == 3
    model, meta = load_model(part_dir / "final.safetensors")
    assert meta.model_name == "speck3c1fc" and meta.scheme["name"] == "mtt" and meta.epoch == 2
    assert meta.t_range == (1, 4) and meta.dataset == "saccade-mnist"
    prov = json.loads((part_dir / "config.json").read_text())
    assert prov["config"]["scheme"]["s"] == 2 and "git_hash" in prov
    # resuming with other settings is refused, naming the field
    with pytest.raises(ConfigError) as info:
        train(_cfg(lr=1e-2), out_dir=part_dir, resume=True, train_data=train_ds, test_data=test_ds)
    assert info.value.field == "lr"
    with pytest.raises(CheckpointError):
        train(cfg, out_dir=tmp_path / "nothing", resume=True, train_data=train_ds, test_data=test_ds)


@pytest.mark.slow
def test_bias_removal_phase_and_bn_calibration(tmp_path, tiny_data):
    train_ds, test_ds = tiny_data
    bn = _cfg(epochs=1, model_kwargs={"T": 4, "batch_norm": True}, augment=False, bn_calibration_batches=2)
    res = train(bn, out_dir=tmp_path / "bn", train_data=train_ds, test_data=test_ds)
    meta = load_checkpoint(tmp_path / "bn" / "final.safetensors")[1]
    assert meta.extra["calibrated"] and meta.extra["has_batch_norm"]
    ft = _cfg(epochs=1, phase="bias_removal", init_checkpoint=str(res.final_path), augment=False)
    out = train(ft, out_dir=tmp_path / "ft", train_data=train_ds, test_data=test_ds)
    model, meta2 = load_model(out.final_path)
    assert meta2.model_kwargs["batch_norm"] is False and meta2.extra["phase"] == "bias_removal"
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("backprop", ["rate", "rate_S"])
def test_rate_step_plugs_into_train_step(backprop):
    torch.manual_seed(1)
    model = build_model("speck3c1fc")
    model.train()
    x = (torch.rand(3, 2, 2, 34, 34) < 0.3).float() * 2
    y = torch.tensor([0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_step(model, x, y, [(3, 2, 1, 1), (3, 3, 3, 3)], build_loss("ce"), get_step_fn(backprop), opt)
    assert stats.seen == 4 and all(p.grad is not None for p in model.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_rate_modes_give_their_own_gradients():
    """--backprop rate_S really selects the single-step mode: same gradient as rate_M without BN."""
    grads = {}
    for backprop in ("rate_M", "rate_S"):
        torch.manual_seed(3)
        model = build_model("speck3c1fc")
        x = (torch.rand(4, 2, 2, 34, 34) < 0.3).float() * 2
        y = torch.tensor([2, 7])
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        train_step(model, x, y, [(4, 4, 4, 4)], build_loss("ce"), get_step_fn(backprop), opt)
        grads[backprop] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(grads["rate_M"], grads["rate_S"], atol=1e-6)
    assert get_step_fn("rate_S").__name__ == "rate_step_rate_S"
