"""Chip-faithful training (issue 15): drawn input T and log-uniform sampling, fake quantization
equal to the exported image's time-binned run, the single-spike neuron, and the SynOps estimate
equal to the time-binned backend's count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.data.events import make_events
from flexsnn.data.frames import events_to_frames
from flexsnn.errors import ConfigError
from flexsnn.models.zoo import build_model
from flexsnn.training.qat import chip_forward, chip_layers, layer_scale
from flexsnn.training.schemes import SchemeConfig, input_frames, sample_configs, step_generator
from flexsnn.training.synops import SynOpsMeter, energy_uj, synops_penalty


# ----------------------------------------------------------------------------- sampling
def _draws(scheme: SchemeConfig, n_steps: int = 400, stages: int = 4) -> np.ndarray:
    return np.asarray([c for step in range(n_steps)
                       for c in sample_configs(scheme, stages, step_generator(0, step))])


def test_input_T_is_drawn_in_range_and_data_T_is_its_max():
    sc = SchemeConfig(name="mtt", T=10, r_left=9, r_right=90, t_input_min=1, t_input_max=100)
    d = _draws(sc)
    assert d.min() >= 1 and d.max() <= 100
    assert len(set(d[:, 0])) > 30  # the input stage varies
    assert sc.data_T == 100 and sc.max_config(4) == (100, 100, 100, 100)
    assert sc.t_range == (1, 100)
    fixed = SchemeConfig(name="mtt", T=10, r_left=9)
    assert set(_draws(fixed, 50)[:, 0]) == {10} and fixed.data_T == 10


def test_log_uniform_puts_as_many_draws_below_10_as_above():
    uni = _draws(SchemeConfig(name="mtt", T=10, r_left=9, r_right=90, t_input_min=1, t_input_max=100))
    log = _draws(SchemeConfig(name="mtt", T=10, r_left=9, r_right=90, t_input_min=1, t_input_max=100,
                              sampling="log-uniform"))
    assert 0.4 < np.mean(log < 10) < 0.6  # P(t < 10) = log(10)/log(101) = 0.499
    assert np.mean(uni < 10) < 0.15        # uniform: 9/100
    assert log.min() >= 1 and log.max() <= 100
    # reproducible from (seed, step)
    sc = SchemeConfig(name="mtt", T=10, t_input_min=5, t_input_max=50, sampling="log-uniform")
    assert sample_configs(sc, 4, step_generator(3, 7)) == sample_configs(sc, 4, step_generator(3, 7))


def test_include_max_puts_the_full_T_configuration_first_at_the_same_cost():
    sc = SchemeConfig(name="mtt", T=10, s=3, r_left=9, include_max=True)
    for step in range(50):
        configs = sample_configs(sc, 4, step_generator(0, step))
        assert len(configs) == 3 and configs[0] == (10, 10, 10, 10)
        assert all(c[0] == 10 and 1 <= min(c[1:]) and max(c[1:]) <= 10 for c in configs[1:])
    assert len({c for step in range(50) for c in sample_configs(sc, 4, step_generator(0, step))[1:]}) > 20
    fine = SchemeConfig(name="mtt", T=10, s=2, r_left=9, r_right=90, t_input_min=1, t_input_max=100,
                        include_max=True)
    assert sample_configs(fine, 3, step_generator(1, 2))[0] == (100, 100, 100)
    with pytest.raises(ConfigError, match="include_max"):
        SchemeConfig(name="sdt", include_max=True)


@pytest.mark.parametrize("kwargs", [dict(name="sdt", t_input_min=1, t_input_max=100),
                                    dict(name="mtt", t_input_min=1),
                                    dict(name="mtt", t_input_min=50, t_input_max=20),
                                    dict(name="mtt", sampling="loguniform")])
def test_bad_ranges_are_refused(kwargs):
    with pytest.raises(ConfigError):
        SchemeConfig(T=10, **kwargs)


def test_input_frames_sum_the_fine_frames():
    x = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1)
    y = input_frames(x, 10)
    assert y.shape[0] == 10 and float(y.sum()) == float(x.sum())
    assert float(y[0]) == float(x[:10].sum())
    assert input_frames(x, 100) is x


# ----------------------------------------------------------------------------- chip images
def _chip_model(seed: int, floor: float = -2.0, shift: float = 0.08, gain: float = 3.0):
    torch.manual_seed(seed)
    model = build_model("speck3c1fc", neuron={"min_v_mem": floor})
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain).add_(shift)  # enough activity to reach the output layer
    return model.eval()


def _events(seed: int, n_samples: int = 4, n: int = 1500):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_samples):
        cx, cy = rng.integers(8, 26, 2)
        x = np.clip(rng.normal(cx, 5, n), 0, 33).astype(int)
        y = np.clip(rng.normal(cy, 5, n), 0, 33).astype(int)
        out.append(make_events(x, y, rng.integers(0, 2, n), np.sort(rng.integers(0, 300_000, n))))
    return out


def _frames(events, T):
    from flexsnn.data.events import SensorSize

    fr = [events_to_frames(ev, SensorSize(34, 34, 2), T) for ev in events]
    return torch.from_numpy(np.stack(fr, 1))  # [T, B, 2, 34, 34]


@pytest.mark.parametrize("spike,T", [("multi", 10), ("multi", 3), ("single", 10)])
def test_fake_quantized_forward_equals_time_binned_backend(spike, T):
    from flexsnn.converters.export import export_chip_image
    from flexsnn.deploy.time_binned import TimeBinnedBackend

    model = _chip_model(0)
    image, report = export_chip_image(model)
    # the scales are the converter's
    for (layer, neuron), lr in zip(chip_layers(model), report.layers):
        assert layer_scale(layer.weight, neuron.config.threshold, neuron.config.min_v_mem) == pytest.approx(lr.scale, rel=0, abs=0)
    events = _events(1)
    tb = TimeBinnedBackend(T, spike=spike)
    tb.load(image)
    want = np.stack([r.class_counts for r in tb.run_batch(events)])
    model.set_uniform(T)
    with torch.no_grad(), chip_forward(model, quantize=True, spike=spike):
        got = model(_frames(events, T)).sum(0).numpy()
    assert want.sum() > 20  # the output layer is active: the comparison is not trivial
    np.testing.assert_array_equal(got, want)
    # the float model (no fake quantization) differs somewhere: quantization matters
    with torch.no_grad():
        plain = model(_frames(events, T)).sum(0).numpy()
    assert model.stages[0].layers[1].strategy is None  # the context restored the neurons
    assert not np.array_equal(plain, want) or spike == "multi"


def test_single_spike_neuron_fires_at_most_once_per_step_and_keeps_gradients():
    model = _chip_model(2, shift=0.01, gain=1.0)
    model.set_uniform(5)
    x = _frames(_events(3, 2), 5)
    counts = {}

    def hook(m, i, out):
        counts.setdefault(id(m), []).append(out.detach())
    from flexsnn.models.neurons import iter_neurons

    hs = [n.register_forward_hook(hook) for n in iter_neurons(model)]
    with chip_forward(model, quantize=False, spike="single"):
        out = model(x)
        out.sum().backward()
    for h in hs:
        h.remove()
    assert all(float(o.max()) <= 1.0 for v in counts.values() for o in v)
    assert any(float(o.sum()) > 0 for v in counts.values() for o in v)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
               for p in model.parameters())
    with pytest.raises(ConfigError):
        with chip_forward(model, spike="triple"):
            pass


def test_qat_gradient_is_straight_through():
    model = _chip_model(4, shift=0.01, gain=1.0)  # moderate activity: surrogates not saturated
    model.set_uniform(4)
    with chip_forward(model, quantize=True):
        out = model(_frames(_events(5, 2), 4))
        out.sum().backward()
    g = [p.grad for p in model.parameters()]
    assert all(v is not None and torch.isfinite(v).all() for v in g) and any(float(v.abs().sum()) > 0 for v in g)


def test_qat_refuses_batch_norm():
    with pytest.raises(ConfigError):
        with chip_forward(build_model("speck3c1fc", batch_norm=True)):
            pass


@pytest.mark.parametrize("T", [10, 30])
def test_synops_estimate_equals_time_binned_count(T):
    from flexsnn.converters.export import export_chip_image
    from flexsnn.deploy.time_binned import TimeBinnedBackend

    model = _chip_model(6, floor=-4.0)
    image, _ = export_chip_image(model)
    events = _events(7)
    tb = TimeBinnedBackend(T)
    tb.load(image)
    want = sum(sum(r.synops.values()) for r in tb.run_batch(events))
    model.set_uniform(T)
    with torch.no_grad(), SynOpsMeter(model) as meter, chip_forward(model, quantize=True):
        model(_frames(events, T))
        total, per_layer = meter.pop()
    assert len(per_layer) == 4 and all(v > 0 for v in per_layer.values())
    assert int(round(float(total))) == want


@pytest.mark.parametrize("T", [10, 40])
def test_rate_backprop_budget_counts_the_spike_pass_and_its_gradient_lowers_synops(T):
    from flexsnn.training.rate_backprop import rate_loss_and_backward
    from flexsnn.training.synops import BudgetedLoss

    model = _chip_model(6, floor=-4.0).train()
    model.set_uniform(T)
    x = _frames(_events(7), T).float()
    y = torch.zeros(x.shape[1], dtype=torch.long)

    def synops(m):
        with torch.no_grad(), SynOpsMeter(m) as meter:
            m(x)
            return float(meter.pop()[0]) / x.shape[1]

    s0 = synops(model)
    zero = lambda logits, target: logits.sum() * 0.0  # noqa: E731  (only the budget's gradient)
    with SynOpsMeter(model) as meter:
        budgeted = BudgetedLoss(zero, meter, budget=s0 / 2, weight=1.0)
        seen = []
        res = rate_loss_and_backward(model, x, y, budgeted,
                                     extra_loss=lambda: seen.append(budgeted.rate_penalty()) or seen[-1])
    # the loss carries the spike pass's penalty, the rate term has the same value and a gradient
    assert float(res.loss) == pytest.approx(1.0, rel=1e-6)  # relu(s0 / (s0/2) - 1)
    assert seen[0] is not None and seen[0].requires_grad and float(seen[0].detach()) == pytest.approx(1.0, rel=1e-5)
    assert not meter.layer_ops and not meter.per_layer  # nothing left for the next step's count
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():  # a step down the budget's gradient spends fewer SynOps
        for p in model.parameters():
            p.sub_(0.05 * p.grad / p.grad.abs().max().clamp_min(1e-12))
    assert synops(model) < s0
    # without a budget the rate term is absent
    with SynOpsMeter(model) as meter:
        free = BudgetedLoss(zero, meter, budget=None)
        rate_loss_and_backward(model, x, y, free, extra_loss=free.rate_penalty)
        assert free.epoch_mean() > 0


def test_synops_penalty_and_energy():
    s = torch.tensor(3e6, requires_grad=True)
    p = synops_penalty(s, 2e6)
    p.backward()
    assert float(p) == pytest.approx(0.5) and float(s.grad) == pytest.approx(1 / 2e6)
    assert float(synops_penalty(torch.tensor(1e6), 2e6)) == 0.0
    assert energy_uj(2e6, None) is None and energy_uj(2e6, 1.0) == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        energy_uj(1.0, -1.0)


def test_recipe_configs():
    from flexsnn.training.recipes import CHIP_RECIPE, chip_finetune_config, chip_recipe_config

    cfg = chip_recipe_config("base.safetensors", epochs=3, seed=2)
    assert cfg.phase == "bias_removal" and cfg.init_checkpoint == "base.safetensors" and cfg.epochs == 3
    assert cfg.model_kwargs["neuron"]["min_v_mem"] == CHIP_RECIPE["floor"]
    assert cfg.synops_budget == CHIP_RECIPE["budget"] and cfg.qat == CHIP_RECIPE["qat"]
    fine = chip_finetune_config("b", fine=True, backprop="rate_M")
    assert fine.scheme.t_input_max == 100 and fine.scheme.sampling == "log-uniform" and fine.backprop == "rate_M"
    assert fine.scheme.stage_range == (1, 100)
    assert chip_finetune_config("b", include_max=True).scheme.include_max
    assert chip_finetune_config("b", floor=-4.0, deploy_floor=-16.0).deploy_min_v_mem == -16.0
    assert cfg.deploy_min_v_mem == CHIP_RECIPE.get("deploy_floor")
    # the recipe distils the base it fine-tunes, at the recipe's weight
    assert cfg.distill_checkpoint == "base.safetensors" and cfg.distill_weight == CHIP_RECIPE["distill"] == 3.0
    assert cfg.distill_temperature == 2.0
    assert chip_finetune_config("b", distill=1.0, distill_temperature=1.0).distill_temperature == 1.0
    from flexsnn.training.recipes import recipe_text

    assert recipe_text(dict(floor=-4.0, deploy_floor=-16.0, budget=1.5e6)) == \
        "trained with floor -4, deployed with floor -16, a SynOps budget of 1.5M per sample"
    assert recipe_text(dict(floor=-4.0)) == "trained with floor -4 (the floor it is deployed with)"
    assert recipe_text().endswith("core 0's threshold x1.75 at export")
    for bad in (dict(floor=1.5), dict(scheme="sdt", fine=True), dict(scheme="nmt"), dict(scheme="sdt", include_max=True),
                dict(backprop="rate_M", qat=True)):
        with pytest.raises(ConfigError):
            chip_finetune_config("b", **bad)


# ----------------------------------------------------------------------------- distillation, deploy floor
def _save(model, path):
    from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint

    meta = CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs, neuron_profile="speck-iaf",
                          stages=model.stage_names, scheme={"name": "sdt"}, t_range=(3, 3), dataset="saccade-mnist")
    return save_checkpoint(path, model, meta)


def test_distill_loss_is_zero_at_the_teacher_and_scale_free_in_T():
    import torch.nn.functional as F

    from flexsnn.training.distill import Distiller, distill_loss

    teacher = _chip_model(3)
    d = Distiller(teacher, T=10, weight=0.5, temperature=2.0)
    x = _frames(_events(2), 10).float()
    probs = d.targets(x)
    teacher.set_uniform(10)
    with torch.no_grad():
        z = teacher(x)
    assert torch.allclose(probs, F.softmax(z.mean(0) / 2.0, -1))
    assert float(distill_loss(z, probs, 2.0, 10)) == pytest.approx(0.0, abs=1e-6)
    # a student with the same spike counts in one output step matches as well
    assert float(distill_loss(z.sum(0, keepdim=True), probs, 2.0, 10)) == pytest.approx(0.0, abs=1e-6)
    other = torch.flip(z, dims=[-1])
    ce = lambda logits, y: torch.zeros(())  # noqa: E731
    loss = d.loss_for(ce, x)(other, torch.zeros(x.shape[1], dtype=torch.long))
    assert float(loss) == pytest.approx(0.5 * float(distill_loss(other, probs, 2.0, 10))) and float(loss) > 0
    assert not any(p.requires_grad for p in teacher.parameters())


def test_distillation_trains_and_is_refused_with_rate_backprop(tmp_path):
    from flexsnn.training.recipes import chip_finetune_config
    from flexsnn.training.trainer import TrainConfig, train

    torch.manual_seed(0)
    base = _save(build_model("speck3c1fc", batch_norm=True, T=3), tmp_path / "base.safetensors")
    cfg = chip_finetune_config(base, distill=1.0, T=3, epochs=1, limit=16, test_limit=8, batch_size=8,
                               device="cpu")
    assert cfg.distill_checkpoint == str(base) and cfg.distill_weight == 1.0
    res = train(cfg, out_dir=tmp_path / "kd")
    plain = train(chip_finetune_config(base, T=3, epochs=1, limit=16, test_limit=8, batch_size=8, device="cpu"),
                  out_dir=tmp_path / "plain")
    assert res.history[-1]["train_loss"] != plain.history[-1]["train_loss"]  # the term is in the loss
    for bad in (dict(backprop="rate_M", distill_checkpoint=str(base)), dict(distill_weight=-1.0),
                dict(distill_temperature=0.0), dict(deploy_min_v_mem=1.5)):
        with pytest.raises(ConfigError, match="distill|deploy_min_v_mem"):
            TrainConfig(**bad)


def test_with_floor_sets_every_neurons_floor_and_keeps_weights(tmp_path):
    from flexsnn.converters.export import export_chip_image
    from flexsnn.training.recipes import with_floor

    model = _chip_model(4, floor=-4.0)
    path = _save(model, tmp_path / "m.safetensors")
    deep, _ = with_floor(path, -16.0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), deep.state_dict().values()))
    image4, _ = export_chip_image(model)
    image16, _ = export_chip_image(deep)
    for c4, c16 in zip(image4.cores, image16.cores):
        assert c16.threshold_high == c4.threshold_high and abs(c16.threshold_low - 4 * c4.threshold_low) <= 2
    with pytest.raises(ConfigError, match="deploy_floor"):
        with_floor(path, 2.0)


def test_deploy_floor_is_written_into_the_final_checkpoint(tmp_path):
    """``deploy_min_v_mem``: the final checkpoint's neurons and its metadata carry the deeper
    floor; the weights are the trained ones."""
    from flexsnn.models.checkpoint import load_model
    from flexsnn.training.recipes import chip_finetune_config
    from flexsnn.training.trainer import train

    torch.manual_seed(0)
    base = _save(build_model("speck3c1fc", batch_norm=True, T=3), tmp_path / "base.safetensors")
    res = train(chip_finetune_config(base, floor=-4.0, deploy_floor=-16.0, T=3, epochs=1, limit=16,
                                     test_limit=8, batch_size=8, device="cpu"), out_dir=tmp_path / "deep")
    model, meta = load_model(res.final_path)
    assert meta.model_kwargs["neuron"]["min_v_mem"] == -16.0
    floors = {m.config.min_v_mem for m in model.modules()
              if getattr(getattr(m, "config", None), "min_v_mem", None) is not None}
    assert floors == {-16.0}
