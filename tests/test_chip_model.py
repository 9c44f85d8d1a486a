"""Chip-ready model: exact spikes at uniform T, BN folding, bias refusal, AvgPool -> SumPool, Linear -> Conv."""

from __future__ import annotations

import logging

import pytest
import sinabs.layers as sl
import torch
from torch import nn

from flexsnn.converters.chip_model import (
    chip_ready_model,
    from_sinabs_layout,
    run_chip_model,
    to_sinabs_layout,
)
from flexsnn.errors import ChipConstraintError
from flexsnn.models.neurons import make_neuron
from flexsnn.models.tfsnn import TFSNN, Stage
from flexsnn.models.zoo import build_model


def _spikes_in(T=6, B=2, shape=(2, 34, 34), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < 0.25).float()


def test_layout_round_trip_and_order():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4).float()  # [T=2, B=3, 4]
    y = to_sinabs_layout(x)
    assert y.shape == (6, 4)
    assert torch.equal(y[1], x[1, 0])  # row b*T + t: b=0, t=1
    assert torch.equal(from_sinabs_layout(y, 2), x)


@pytest.mark.parametrize("name", ["speck3c1fc", "speck4c"])
def test_uniform_T_spikes_equal_trained_model_exactly(name):
    torch.manual_seed(1)
    model = build_model(name, T=6)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    chip, info = chip_ready_model(model)
    assert all(type(m) in (nn.Conv2d, sl.IAFSqueeze, sl.SumPool2d) for m in chip)
    x = _spikes_in()
    expected = model(x)
    got = run_chip_model(chip, x)
    assert expected.sum() > 0
    assert torch.equal(got, expected)
    assert info.num_classes == 10 and info.leak_layers == ()


def _tfsnn(layers, shape=(2, 8, 8), k=4):
    return TFSNN([Stage("s", layers)], neuron_profile="speck-iaf", num_classes=k, input_shape=shape, default_T=6)


def test_avgpool_becomes_sumpool_with_rescaled_next_weights():
    torch.manual_seed(2)
    model = _tfsnn([nn.Conv2d(2, 4, 3, padding=1, bias=False), make_neuron("speck-iaf"), nn.AvgPool2d(2),
                    nn.Flatten(), nn.Linear(4 * 4 * 4, 4, bias=False), make_neuron("speck-iaf")])
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().mul_(2.0)
    chip, _ = chip_ready_model(model)
    assert isinstance(chip[2], sl.SumPool2d)
    assert torch.equal(chip[3].weight, model.stages[0].layers[4].weight.reshape(4, 4, 4, 4) / 4)
    x = _spikes_in(shape=(2, 8, 8))
    expected = model(x)
    assert expected.sum() > 0
    assert torch.equal(run_chip_model(chip, x), expected)


def test_batchnorm_folded_and_bias_refused_unless_leak(caplog):
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
    bn.eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    model = _tfsnn([conv, bn, make_neuron("speck-iaf")], k=4)
    with pytest.raises(ChipConstraintError) as err:
        chip_ready_model(model)
    v = err.value.violations[0]
    assert v.field == "biases" and "layer 0 (Conv2d" in v.where and "allow-leak" in v.fix
    with caplog.at_level(logging.WARNING):
        chip, info = chip_ready_model(model, allow_leak=True)
    assert "leak" in caplog.text and info.folded_bn == 1 and info.leak_layers == (0,)
    x = torch.randn(5, 2, 8, 8)
    assert torch.allclose(chip[0](x), bn(conv(x)), atol=1e-5)


def test_batchnorm_without_shift_folds_to_zero_bias():
    conv, bn = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_var.fill_(3.0)  # mean 0, beta 0: a pure scale
    chip, info = chip_ready_model(_tfsnn([conv, bn, make_neuron("speck-iaf")]))
    assert info.folded_bn == 1 and torch.count_nonzero(chip[0].bias) == 0


def test_non_iaf_neuron_refused():
    model = _tfsnn([nn.Conv2d(2, 4, 3, bias=False), make_neuron("paper-lif")])
    with pytest.raises(ChipConstraintError) as err:
        chip_ready_model(model)
    fields = {v.field for v in err.value.violations}
    assert {"neuron decay", "neuron spike/reset"} <= fields


def test_hand_built_sinabs_sequential_with_linear():
    torch.manual_seed(4)
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0), sl.SumPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    chip, _ = chip_ready_model(seq, input_shape=(2, 16, 16))
    assert isinstance(chip[3], nn.Conv2d) and chip[3].kernel_size == (4, 4)
    x = _spikes_in(T=4, B=2, shape=(2, 16, 16)) * 3
    for m in seq:
        if isinstance(m, sl.IAFSqueeze):
            m.batch_size = 2
            m.reset_states()
    ref = from_sinabs_layout(seq(to_sinabs_layout(x)), 4)
    assert torch.equal(run_chip_model(chip, x), ref)


def test_unsupported_layers_all_listed():
    model = _tfsnn([nn.Conv2d(2, 4, 3, bias=False), nn.ReLU(), make_neuron("speck-iaf"), nn.MaxPool2d(2)])
    with pytest.raises(ChipConstraintError) as err:
        chip_ready_model(model)
    values = [v.value for v in err.value.violations]
    assert "ReLU" in values and "MaxPool2d" in values
