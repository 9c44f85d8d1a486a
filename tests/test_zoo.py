"""Model zoo: exact speck3c1fc, Speck nets inside Speck2e limits (memory formulas, a core for
every layer), paper nets run with tiny widths, registry and kwargs."""

from __future__ import annotations

import itertools
import json

import pytest
import sinabs.layers as sl
import torch
from torch import nn

from flexsnn.converters.speck2e import SPECK2E, kernel_memory_entries, neuron_memory_entries
from flexsnn.errors import ConfigError
from flexsnn.models.neurons import SpikingNeuron, iter_neurons
from flexsnn.models.tfsnn import TFSNN
from flexsnn.models.zoo import ZooEntry, build_model, group_blocks, list_models
from layout import assert_layout

SPECK_NETS = ["speck3c1fc", "speck4c"]


def test_registry():
    entries = list_models()
    assert [e.name for e in entries] == ["speck3c1fc", "speck4c", "resnet18", "resnet19", "vgg", "convnet", "vggsnn",
                                         "seqfc"]  # seqfc: issue 10, vggsnn: issue 18
    assert all(isinstance(e, ZooEntry) for e in entries)
    by_name = {e.name: e for e in entries}
    assert by_name["speck3c1fc"].neuron_profile == "speck-iaf" and by_name["speck3c1fc"].input_shape == (2, 34, 34)
    assert by_name["resnet19"].neuron_profile == "paper-lif" and by_name["resnet19"].input_shape == (3, 32, 32)


def test_speck3c1fc_exact_architecture():
    model = build_model("speck3c1fc")
    kinds = [[type(l).__name__ for l in s.layers] for s in model.stages]
    assert kinds == [
        ["Conv2d", "SpikingNeuron", "SumPool2d"],
        ["Conv2d", "SpikingNeuron", "SumPool2d"],
        ["Conv2d", "SpikingNeuron"],
        ["Flatten", "Linear", "SpikingNeuron"],
    ]
    convs = [l for l in model.flat_layers() if isinstance(l, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (2, 8, (3, 3), (1, 1), (1, 1)), (8, 16, (3, 3), (1, 1), (1, 1)), (16, 16, (3, 3), (2, 2), (1, 1))]
    fc = model.stages[3].layers[1]
    assert (fc.in_features, fc.out_features) == (256, 10)
    assert sum(p.numel() for p in model.parameters()) == 6160
    assert all(p.dim() > 1 for p in model.parameters())  # no biases at all
    assert all(n.config.profile == "speck-iaf" for n in iter_neurons(model))
    assert model.neuron_profile == "speck-iaf" and model.num_classes == 10 and model.input_shape == (2, 34, 34)


def test_speck3c1fc_width_scales_every_layer():
    model = build_model("speck3c1fc", width=16, batch_norm=True)
    convs = [l for l in model.flat_layers() if isinstance(l, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(2, 16, (1, 1)), (16, 32, (1, 1)),
                                                                           (32, 32, (2, 2))]
    assert model.stages[3].layers[1].in_features == 512
    assert sum(p.numel() for p in model.parameters() if p.dim() > 1) == 2 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9 + 5120
    assert model(torch.zeros(2, 3, 2, 34, 34)).shape[-1] == 10
    for bad in (0, 65, 8.0, True):
        with pytest.raises(ConfigError, match="width"):
            build_model("speck3c1fc", width=bad)
    custom = build_model("speck3c1fc", channels=[16, 32, 64])
    assert [c.out_channels for c in custom.flat_layers() if isinstance(c, nn.Conv2d)] == [16, 32, 64]
    assert custom.stages[3].layers[1].in_features == 1024
    for bad in ([16, 32], [16, 0, 8], [16, 32, 8.5]):
        with pytest.raises(ConfigError, match="channels"):
            build_model("speck3c1fc", channels=bad)


def test_speck3c1fc_wider_than_16_does_not_fit_speck2e():
    from flexsnn.converters.export import export_chip_image
    from flexsnn.errors import ChipConstraintError

    with pytest.raises(ChipConstraintError, match="neuron memory"):
        export_chip_image(build_model("speck3c1fc", width=20))


def test_speck3c1fc_batch_norm_phase():
    model = build_model("speck3c1fc", batch_norm=True)
    bns = [l for l in model.flat_layers() if isinstance(l, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [8, 16, 16]
    for stage in model.stages[:3]:
        kinds = [type(l).__name__ for l in stage.layers]
        assert kinds[:3] == ["Conv2d", "BatchNorm2d", "SpikingNeuron"]
    weights = [p for p in model.parameters() if p.dim() > 1]
    assert sum(p.numel() for p in weights) == 6160
    assert all(c.bias is None for c in model.flat_layers() if isinstance(c, (nn.Conv2d, nn.Linear)))


def _chip_layers(model: TFSNN) -> list[dict]:
    """Geometry of every weight layer as the chip sees it, traced with one forward pass.

    A Linear layer is a conv whose kernel covers its whole input map (the map that entered
    the Flatten before it); SumPool2d after a layer becomes that layer's pooling.
    """
    layers = model.flat_layers()
    shapes: dict[int, tuple[tuple, tuple]] = {}
    handles = [layer.register_forward_hook(
        lambda m, i, o, k=k: shapes.__setitem__(k, (tuple(i[0].shape), tuple(o.shape))))
        for k, layer in enumerate(layers)]
    model.set_uniform(1)
    with torch.no_grad():
        model(torch.zeros(1, 1, *model.input_shape))
    for h in handles:
        h.remove()
    records: list[dict] = []
    for k, layer in enumerate(layers):
        x_shape, y_shape = shapes[k]
        if isinstance(layer, nn.Conv2d):
            records.append(dict(c_in=layer.in_channels, c_out=layer.out_channels, k=layer.kernel_size[0],
                                stride=layer.stride[0], pad=layer.padding[0], in_hw=x_shape[-2:],
                                out_hw=y_shape[-2:], pool=1))
        elif isinstance(layer, nn.Linear):
            c, h, w = shapes[k - 1][0][-3:]  # the map that entered the Flatten
            assert isinstance(layers[k - 1], nn.Flatten) and c * h * w == layer.in_features
            records.append(dict(c_in=c, c_out=layer.out_features, k=max(h, w), stride=1, pad=0,
                                in_hw=(h, w), out_hw=(1, 1), pool=1))
        elif isinstance(layer, sl.SumPool2d):
            ks = layer.kernel_size
            records[-1]["pool"] *= ks if isinstance(ks, int) else ks[0]
    return records


@pytest.mark.parametrize("name, kwargs", [("speck3c1fc", {}), ("speck3c1fc", {"width": 16}),
                                          ("speck3c1fc", {"channels": [16, 32, 64]}), ("speck4c", {})])
def test_speck_nets_fit_speck2e(name, kwargs):
    model = build_model(name, **kwargs)
    records = _chip_layers(model)
    assert len(records) == sum(isinstance(l, (nn.Conv2d, nn.Linear)) for l in model.flat_layers())
    lim = SPECK2E
    assert len(records) <= lim.n_cores
    fits = []
    for r in records:
        assert r["c_in"] <= lim.max_features and r["c_out"] <= lim.max_features
        assert max(r["in_hw"]) <= lim.max_input_size and max(r["out_hw"]) <= lim.max_output_size
        assert r["k"] <= lim.max_kernel_size and r["stride"] in lim.strides and r["pad"] <= lim.max_padding
        assert r["pool"] in lim.poolings
        kern = kernel_memory_entries(r["c_in"], r["c_out"], r["k"], r["k"])
        neur = neuron_memory_entries(r["c_out"], *r["out_hw"])
        cores = {c for c in range(lim.n_cores) if kern <= lim.kernel_memory[c] and neur <= lim.neuron_memory[c]}
        assert cores, f"{name}: layer {r} fits no core (kernel {kern}, neurons {neur})"
        fits.append(cores)
    # one distinct core per layer
    assert any(all(c in f for c, f in zip(perm, fits))
               for perm in itertools.permutations(range(lim.n_cores), len(fits))), fits
    assert records[0]["c_in"] <= lim.max_dvs_channels


@pytest.mark.parametrize("name", SPECK_NETS)
def test_speck_nets_have_no_biases_and_no_avgpool(name):
    for bn in (False, True):
        model = build_model(name, batch_norm=bn)
        for layer in model.flat_layers():
            assert not isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                assert layer.bias is None
            if isinstance(layer, nn.BatchNorm2d):
                assert bn
        assert model.first_ttm_mode == "trim"


@pytest.mark.parametrize("name, kwargs, n_stages", [
    ("resnet18", {"width": 2}, 8), ("resnet19", {"width": 2}, 8), ("vgg", {"width": 1}, 13),
    ("speck4c", {}, 5)])
def test_models_run_at_mixed_temporal_config(name, kwargs, n_stages):
    model = build_model(name, num_classes=7, **kwargs)
    assert model.num_stages == n_stages and model.num_classes == 7
    config = tuple((i % 3) + 1 for i in range(n_stages))
    model.set_temporal_config(config)
    x = torch.rand(2, 2, *model.input_shape)
    y = model(x)
    assert_layout(y, (config[-1], 2, 7), name=name)
    assert y.dtype == torch.float32
    y.sum().backward()
    expected = "speck-iaf" if name.startswith("speck") else "paper-lif"
    assert model.neuron_profile == expected
    assert all(n.config.profile == expected for n in iter_neurons(model))


def test_paper_resnet18_full_size_parameter_count():
    model = build_model("resnet18", num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert 11.1e6 < n < 11.3e6  # CIFAR ResNet-18 (~11.17 M)


@pytest.mark.parametrize("g, names", [
    (2, ("block1+block2", "block3+block4", "block5+block6", "block7+block8")),
    (3, ("block1+block2+block3", "block4+block5+block6", "block7+block8")),
    (8, ("block1+block2+block3+block4+block5+block6+block7+block8",)),
])
def test_granularity_groups_blocks(g, names):
    model = build_model("resnet18", width=2, granularity=g)
    assert model.stage_names == names
    model.set_uniform(2)
    assert model(torch.rand(1, 1, 3, 32, 32)).shape == (2, 1, 10)


def test_granularity_keeps_computation_at_uniform_T():
    a = build_model("speck3c1fc", granularity=1).eval()
    b = build_model("speck3c1fc", granularity=2).eval()
    b_params = [p for p in b.parameters()]
    with torch.no_grad():
        for pa, pb in zip(a.parameters(), b_params):
            pb.copy_(pa * 4)
            pa.mul_(4)
    a.set_uniform(3)
    b.set_uniform(3)
    x = torch.poisson(torch.full((3, 2, 2, 34, 34), 0.5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert b.num_stages == 2


def test_bad_granularity():
    with pytest.raises(ConfigError, match="granularity"):
        group_blocks([("a", [nn.Flatten()])], 0)


def test_unknown_model_and_kwarg():
    with pytest.raises(ConfigError, match="speck3c1fc"):
        build_model("lenet")
    with pytest.raises(ConfigError) as info:
        build_model("speck3c1fc", batchnorm=True)
    assert info.value.field == "model.batchnorm"


def test_zoo_kwargs_resolved_and_json_serialisable():
    model = build_model("speck3c1fc", batch_norm=True, neuron={"surrogate": "triangle"})
    assert model.zoo_name == "speck3c1fc"
    assert model.zoo_kwargs["batch_norm"] is True and model.zoo_kwargs["granularity"] == 1
    json.dumps(model.zoo_kwargs)
    assert all(n.config.surrogate == "triangle" for n in iter_neurons(model))
    assert all(isinstance(n, SpikingNeuron) for n in iter_neurons(model))


def test_speck_linear_readout_gives_real_logits_and_is_refused_by_the_chip():
    from flexsnn.converters.export import export_chip_image
    from flexsnn.errors import ChipConstraintError

    torch.manual_seed(0)
    x = (torch.rand(4, 3, 2, 34, 34) < 0.3).float() * 2
    for name in ("speck3c1fc", "speck4c"):
        spiking = build_model(name, T=4)
        linear = build_model(name, T=4, readout="linear")
        linear.load_state_dict(spiking.state_dict())          # same weights: the readout is the only change
        out_s, out_l = spiking(x), linear(x)
        assert out_s.shape == out_l.shape == (4, 3, 10)
        assert torch.equal(out_s, out_s.round()) and not torch.equal(out_l, out_l.round())
        assert linear.zoo_kwargs["readout"] == "linear"
    with pytest.raises(ChipConstraintError, match="IAF"):
        export_chip_image(build_model("speck3c1fc", readout="linear"))
    with pytest.raises(ConfigError, match="readout"):
        build_model("speck3c1fc", readout="softmax")
