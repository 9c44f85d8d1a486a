"""TFSNN: uniform T == plain SNN bit for bit, per-stage T through TTMs, trim for event
models, temporal-config validation, state handling, firing-rate recording."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import SpikingNeuron, neuron_step
from flexsnn.models.tfsnn import TFSNN, Stage, fold_time
from flexsnn.models.ttm import temporal_transform
from flexsnn.models.zoo import build_model
from layout import assert_layout


def _init(model: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * scale / p[0].numel() ** 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _events(T: int, B: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((T, B, 2, 34, 34), 0.3), generator=gen)


def _plain_snn_stepwise(model: TFSNN, x: torch.Tensor) -> torch.Tensor:
    """A plain SNN: time-outer loop, every layer applied to one step [B, ...], neurons via
    neuron_step with their own state. Only for nets made of flat layers (Speck nets)."""
    layers = model.flat_layers()
    states: dict[int, torch.Tensor] = {}
    out = []
    for t in range(x.shape[0]):
        h = x[t]
        for i, layer in enumerate(layers):
            if isinstance(layer, SpikingNeuron):
                v = states.get(i, torch.zeros_like(h))
                h, states[i] = neuron_step(h, v, layer.config)
            else:
                h = layer(h)
        out.append(h)
    return torch.stack(out, 0)


def _plain_snn_layerwise(model: TFSNN, x: torch.Tensor) -> torch.Tensor:
    """A plain SNN as a sequential loop over all layers on [T, B, ...] (any net)."""
    model.reset()
    for layer in model.flat_layers():
        x = layer(x) if (isinstance(layer, SpikingNeuron) or getattr(layer, "temporal", False)) else fold_time(layer, x)
    return x


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("T", [1, 3, 6])
def test_uniform_T_equals_plain_snn_bit_for_bit_speck(batch_norm, T):
    model = _init(build_model("speck3c1fc", batch_norm=batch_norm), scale=2.0)
    model.set_uniform(T)
    x = _events(T, 3)
    with torch.no_grad():
        y = model(x)
        ref = _plain_snn_stepwise(model, x)
    assert_layout(y, (T, 3, 10), name="logits")
    assert y.sum() > 0  # not a trivially silent net
    assert torch.equal(y, ref)


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"width": 2}), ("vgg", {"width": 1}), ("speck4c", {})])
def test_uniform_T_equals_plain_layer_loop(name, kwargs):
    model = _init(build_model(name, **kwargs), scale=3.0)
    model.set_uniform(3)
    C, H, W = model.input_shape
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, C, H, W, generator=gen)
    with torch.no_grad():
        y = model(x)
        ref = _plain_snn_layerwise(model, x)
    assert torch.equal(y, ref)


def test_static_input_single_frame_is_repeated():
    model = _init(build_model("resnet19", width=2), scale=3.0)
    model.set_uniform(4)
    img = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        a = model(img)
        b = model(img.repeat(4, 1, 1, 1, 1))
    assert_layout(a, (4, 2, 10))
    assert torch.equal(a, b)


def test_mixed_config_composes_stages_and_ttms():
    model = _init(build_model("speck3c1fc"), scale=2.0)
    config = (6, 2, 5, 3)
    model.set_temporal_config(config)
    x = _events(6, 2)
    with torch.no_grad():
        y = model(x)
        model.reset()
        h = x
        modes = ["trim", "trim", "even", "even"]  # event model: input and first TTM trim
        for stage, t, mode in zip(model.stages, config, modes):
            h = stage(temporal_transform(h, t, mode=mode))
    assert_layout(y, (3, 2, 10))
    assert torch.equal(y, h)


def test_first_ttm_trims_for_event_models_and_sums_for_static():
    speck = build_model("speck3c1fc")
    assert speck.first_ttm_mode == "trim" and speck.input_ttm_mode == "trim"
    assert [speck.ttm_mode(i) for i in range(4)] == ["trim", "trim", "even", "even"]
    static = build_model("resnet18", width=2)
    assert static.first_ttm_mode == "even" and static.input_ttm_mode == "even"

    # stage 1 -> 2 shortening in trim mode drops the last frames: an event only in the last
    # input frames cannot reach stage 2
    seen = {}
    speck.stages[1].register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].clone()))
    speck.set_temporal_config((4, 2, 2, 2))
    _init(speck, scale=2.0)
    with torch.no_grad():
        speck(_events(4, 2))
        stage1 = speck.stages[0]
        speck.reset()
        s1 = stage1(_events(4, 2))
    assert torch.equal(seen["x"], s1[:2])


def test_mixed_config_backward_reaches_every_weight():
    model = build_model("speck3c1fc", batch_norm=True)
    _init(model, scale=2.0).train()
    model.set_temporal_config((5, 3, 7, 2))
    model(_events(5, 2)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_forward_resets_state_each_call_and_streaming_without_reset():
    model = _init(build_model("speck3c1fc"), scale=2.0)
    model.set_uniform(4)
    x = _events(4, 2)
    with torch.no_grad():
        a = model(x)
        b = model(x)
        assert torch.equal(a, b)
        # streaming at uniform T: two halves without reset == the whole sequence
        model.set_uniform(2)
        first = model(x[:2])
        second = model(x[2:], reset=False)
    assert torch.equal(torch.cat([first, second]), a)


def test_batch_change_without_reset_raises():
    from flexsnn.models.neurons import NeuronStateError

    model = build_model("speck3c1fc")
    model.set_uniform(2)
    model(_events(2, 2))
    with pytest.raises(NeuronStateError):
        model(_events(2, 3), reset=False)
    assert model(_events(2, 3)).shape == (2, 3, 10)


@pytest.mark.parametrize(
    "config", [(1, 2, 3), (1, 2, 3, 4, 5), (0, 1, 1, 1), (1, 2.5, 1, 1), (1, True, 1, 1), ("2", 1, 1, 1)]
)
def test_bad_temporal_configs(config):
    model = build_model("speck3c1fc")
    with pytest.raises(ConfigError) as info:
        model.set_temporal_config(config)
    assert info.value.field.startswith("temporal_config")


def test_temporal_config_accessors():
    model = build_model("speck3c1fc", T=7)
    assert model.num_stages == 4 and model.temporal_config == (7, 7, 7, 7)
    assert model.stage_names == ("conv1", "conv2", "conv3", "fc")
    model.set_temporal_config([2, 3, 4, 5])
    assert model.temporal_config == (2, 3, 4, 5)
    model.set_uniform(1)
    assert model.temporal_config == (1, 1, 1, 1)


def test_wrong_input_layout_raises():
    model = build_model("speck3c1fc")
    with pytest.raises(ConfigError, match="T, B, 2, 34, 34"):
        model(torch.zeros(2, 2, 34, 34, 2))


def test_record_rates_matches_manual_count():
    model = _init(build_model("speck3c1fc"), scale=2.0)
    model.set_temporal_config((4, 3, 2, 5))
    x = _events(4, 2)
    spikes = {}

    def hook(name):
        return lambda m, i, o: spikes.setdefault(name, []).append(o.detach().clone())

    handles = [s.layers[[isinstance(l, SpikingNeuron) for l in s.layers].index(True)].register_forward_hook(hook(s.name))
               for s in model.stages]
    with torch.no_grad(), model.record_rates() as rec:
        model(x)
        model(x)
    for h in handles:
        h.remove()
    rates = rec.rates
    assert set(rates) == {"conv1", "conv2", "conv3", "fc"}
    for name, outs in spikes.items():
        total = sum(float(o.sum()) for o in outs)
        count = sum(o.numel() for o in outs)
        assert rates[name] == pytest.approx(total / count)
    assert rec.neuron_steps["conv1"] == 2 * 4 * 2 * 8 * 34 * 34
    assert rec.neuron_steps["fc"] == 2 * 5 * 2 * 10
    # hooks are gone after the context
    with torch.no_grad():
        model(x)
    assert rec.neuron_steps["fc"] == 2 * 5 * 2 * 10


def test_stage_and_tfsnn_validation():
    stage = Stage("a", [nn.Flatten()])
    with pytest.raises(ConfigError):
        TFSNN([], neuron_profile="paper-lif", num_classes=2, input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="unique"):
        TFSNN([stage, Stage("a", [nn.Flatten()])], neuron_profile="paper-lif", num_classes=4, input_shape=(1, 2, 2))
    with pytest.raises(ConfigError):
        TFSNN([stage], neuron_profile="paper-lif", num_classes=4, input_shape=(1, 2, 2), first_ttm_mode="avg")
