"""Neurons: hand-computed trajectories (oracles), multi-step == looped single step, the chip
neuron == sinabs IAFSqueeze bit for bit (values and gradients), state handling."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import (
    PROFILES,
    NeuronConfig,
    NeuronStateError,
    SpikingNeuron,
    make_neuron,
    neuron_step,
    set_strategy,
    surrogate_grad,
)


def _trajectory(config: NeuronConfig, inputs: list[float]) -> tuple[list[float], list[float]]:
    v = torch.zeros(1)
    spikes, vs = [], []
    for x in inputs:
        s, v = neuron_step(torch.tensor([x]), v, config)
        spikes.append(float(s))
        vs.append(float(v))
    return spikes, vs


def test_paper_lif_hand_computed_trajectory():
    cfg = PROFILES["paper-lif"]
    # v1 = 0.8 -> no spike, u = 0.8
    # v2 = 0.4 + 0.8 = 1.2 -> spike, u = 0
    # v3 = 0 + 1.0 = 1.0 -> no spike (strict v > Vth), u = 1.0
    # v4 = 0.5 + 0.6 = 1.1 -> spike, u = 0
    # v5 = 0 - 0.4 -> no spike, u = -0.4 (no lower bound)
    # v6 = -0.2 + 0.0 -> u = -0.2
    spikes, vs = _trajectory(cfg, [0.8, 0.8, 1.0, 0.6, -0.4, 0.0])
    assert spikes == [0, 1, 0, 1, 0, 0]
    assert vs == pytest.approx([0.8, 0.0, 1.0, 0.0, -0.4, -0.2])


def test_speck_iaf_hand_computed_trajectory():
    cfg = PROFILES["speck-iaf"]
    # v1 = 0.6 -> 0 spikes; v2 = 0.6 + 2.7 = 3.3 -> 3 spikes, u = 0.3
    # v3 = 0.3 - 2.0 = -1.7 -> 0 spikes, clamped to -1.0
    # v4 = -1.0 + 1.0 = 0.0 -> 0 spikes; v5 = 0.0 + 1.0 = 1.0 -> 1 spike, u = 0
    spikes, vs = _trajectory(cfg, [0.6, 2.7, -2.0, 1.0, 1.0])
    assert spikes == [0, 3, 0, 0, 1]
    assert vs == pytest.approx([0.6, 0.3, -1.0, 0.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_multi_step_equals_looped_single_step(profile):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 4, 5, generator=gen) * 1.5
    neuron = make_neuron(profile)
    out = neuron(x)
    v = torch.zeros(3, 4, 5)
    for t in range(7):
        s, v = neuron_step(x[t], v, neuron.config)
        assert torch.equal(out[t], s)
    assert torch.equal(neuron.v, v)


@pytest.mark.parametrize("threshold", [1.0, 0.75])
def test_speck_iaf_equals_sinabs_iafsqueeze_bit_for_bit(threshold):
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, MultiSpike

    gen = torch.Generator().manual_seed(1)
    T, B = 9, 4
    x = (torch.randn(T, B, 3, 5, 5, generator=gen) * 1.2).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)

    ours = make_neuron("speck-iaf", threshold=threshold)
    ref = sl.IAFSqueeze(batch_size=B, min_v_mem=-1.0, spike_fn=MultiSpike, reset_fn=MembraneSubtract(),
                        spike_threshold=threshold)
    s_ours = ours(x)
    # sinabs squeeze layout: [B*T, ...] batch-major
    s_ref = ref(x_ref.transpose(0, 1).reshape(B * T, 3, 5, 5)).reshape(B, T, 3, 5, 5).transpose(0, 1)
    assert s_ours.max() > 1  # multi-spike actually exercised
    assert torch.equal(s_ours, s_ref)
    assert torch.equal(ours.v, ref.v_mem)

    weights = torch.randn(T, B, 3, 5, 5, generator=gen)
    (s_ours * weights).sum().backward()
    (s_ref * weights).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)


def test_paper_lif_gradient_is_triangle_surrogate_bptt():
    """One step: ds/dx = max(0, 1 - |x - 1|) (eq. 6, h = 1)."""
    x = torch.tensor([[0.5], [1.2], [2.5], [1.0]]).T.reshape(1, 4).requires_grad_(True)
    neuron = make_neuron("paper-lif")
    neuron(x).sum().backward()
    assert x.grad.flatten().tolist() == pytest.approx([0.5, 0.8, 0.0, 1.0])


def test_surrogate_grad_formulas():
    v = torch.tensor([0.0, 0.5, 1.0, 1.5, 3.0])
    tri = surrogate_grad(v, PROFILES["paper-lif"])
    assert tri.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    wide = surrogate_grad(v, NeuronConfig(surrogate="triangle", surrogate_width=2.0))
    assert wide.tolist() == pytest.approx([0.25, 0.375, 0.5, 0.375, 0.0])
    exp = surrogate_grad(v, PROFILES["speck-iaf"])
    assert exp.tolist() == pytest.approx((2.0 * torch.exp(-2.0 * (v - 1.0).abs())).tolist())


def test_state_persists_until_reset_and_shape_change_raises():
    neuron = make_neuron("paper-lif")
    x = torch.full((2, 3, 4), 0.6)
    first = neuron(x)
    second = neuron(x)  # continues from the stored state (streaming)
    assert not torch.equal(first, second)
    with pytest.raises(NeuronStateError, match="reset"):
        neuron(torch.zeros(2, 5, 4))
    neuron.reset()
    assert torch.equal(neuron(x), first)
    neuron.reset()
    assert neuron(torch.zeros(1, 5, 4)).shape == (1, 5, 4)  # after reset: new shape is fine


def test_state_is_not_in_state_dict():
    neuron = make_neuron("speck-iaf")
    neuron(torch.ones(2, 3))
    assert neuron.state_dict() == {}


def test_forward_does_not_modify_input():
    x = torch.randn(4, 2, 3)
    before = x.clone()
    make_neuron("speck-iaf")(x)
    assert torch.equal(x, before)


def test_strategy_extension_point():
    calls = []

    def rate_strategy(neuron: SpikingNeuron, x, v0):
        calls.append(tuple(x.shape))
        rate = x.mean(0, keepdim=True).clamp(0, 1)
        return rate, v0

    net = torch.nn.Sequential(make_neuron("paper-lif"), make_neuron("paper-lif"))
    set_strategy(net, rate_strategy)
    out = net[1](net[0](torch.full((5, 2), 0.5)))
    assert out.shape == (1, 2) and calls == [(5, 2), (1, 2)]
    set_strategy(net, None)
    assert net[0].strategy is None


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"decay": 0.0}, "neuron.decay"),
        ({"decay": 1.5}, "neuron.decay"),
        ({"threshold": -1.0}, "neuron.threshold"),
        ({"reset": "zero"}, "neuron.reset"),
        ({"spike": "many"}, "neuron.spike"),
        ({"spike": "multi", "reset": "hard"}, "neuron.reset"),
        ({"min_v_mem": 2.0}, "neuron.min_v_mem"),
        ({"surrogate": "sigmoid"}, "neuron.surrogate"),
        ({"surrogate_width": 0.0}, "neuron.surrogate_width"),
        ({"tau": 2.0}, "neuron.tau"),
    ],
)
def test_invalid_configs_name_the_field(overrides, field):
    profile = "speck-iaf" if overrides.get("reset") != "hard" else "paper-lif"
    with pytest.raises(ConfigError) as info:
        make_neuron(profile, **overrides)
    assert info.value.field == field


def test_unknown_profile():
    with pytest.raises(ConfigError, match="paper-lif"):
        make_neuron("izhikevich")


def test_overrides_keep_profile_name():
    n = make_neuron("speck-iaf", threshold=2.0)
    assert n.config.profile == "speck-iaf" and n.config.threshold == 2.0
    assert n.config.reset == "subtract" and n.config.min_v_mem == -1.0


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(0.0, 5.0, allow_nan=False, width=32), min_size=1, max_size=20),
       threshold=st.sampled_from([0.5, 1.0, 2.0]))
def test_property_speck_iaf_conserves_charge(values, threshold):
    """Non-negative input never hits min_v_mem, so every unit of charge is either emitted as
    spikes (threshold each) or still in the membrane: sum(x) = thr * sum(s) + v_T, 0 <= v_T < thr."""
    x = torch.tensor(values, dtype=torch.float64)[:, None]
    neuron = make_neuron("speck-iaf", threshold=threshold)
    s = neuron(x)
    assert torch.all(s == torch.floor(s)) and torch.all(s >= 0)
    assert float(x.sum()) == pytest.approx(threshold * float(s.sum()) + float(neuron.v.sum()), abs=1e-9)
    assert 0.0 <= float(neuron.v) < threshold


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-3.0, 3.0, allow_nan=False, width=32), min_size=1, max_size=20))
def test_property_paper_lif_single_spikes_and_hard_reset(values):
    x = torch.tensor(values, dtype=torch.float64)[:, None]
    neuron = make_neuron("paper-lif")
    s = neuron(x)
    assert set(s.flatten().tolist()) <= {0.0, 1.0}
    # after a spike the membrane restarts from 0: the next v is exactly the next input
    v = torch.zeros(1, dtype=torch.float64)
    for t in range(len(values)):
        v_int = 0.5 * v + x[t]
        assert float(s[t]) == float(v_int > 1.0)
        v = v_int * (1 - s[t])
