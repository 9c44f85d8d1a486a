"""Oracle: sinabs' own DynapcnnNetwork(discretize=True) + config builder agree with our export.

sinabs.backend.dynapcnn imports samna at load time; where the real samna is usable it is used,
otherwise the samna *test double* (tests/doubles/samna_double.py) stands in for samna's
configuration classes, installed in sys.modules only for this test and removed afterwards.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest
import torch

from flexsnn._optional import samna_status
from flexsnn.converters.chip_model import from_sinabs_layout, run_chip_model, to_sinabs_layout
from flexsnn.converters.discretize import discretized_chip_model
from flexsnn.converters.export import export_chip_image
from flexsnn.models.zoo import build_model


@pytest.fixture
def sinabs_dynapcnn():
    """sinabs.backend.dynapcnn, with the real samna if usable, else the test double (restored after)."""
    if samna_status()[0]:
        ctx = contextlib.nullcontext()
    else:
        from doubles import samna_double

        ctx = samna_double.installed()
    with ctx:
        import sinabs.backend.dynapcnn as dyn

        yield dyn
    if not samna_status()[0]:
        assert "sinabs.backend.dynapcnn" not in sys.modules
        assert "samna" not in sys.modules or "test-double" not in str(getattr(sys.modules["samna"], "__doc__", ""))


def _model(name: str, gain: float, seed: int):
    torch.manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model


@pytest.mark.parametrize("name,gain", [("speck3c1fc", 1.0), ("speck3c1fc", 1e-3), ("speck4c", 1.0)])
def test_sinabs_agrees_on_weights_thresholds_and_cores(sinabs_dynapcnn, name, gain):
    image, report = export_chip_image(_model(name, gain, seed=3))
    chip_model = report.extra["chip_model"]
    net = sinabs_dynapcnn.DynapcnnNetwork(chip_model, input_shape=(2, 34, 34), discretize=True, dvs_input=False)
    config = net.make_config(device="speck2e")
    layers = [net.dynapcnn_layers[k] for k in sorted(net.dynapcnn_layers)]
    assert len(layers) == len(image.cores)
    # core assignment: sinabs' Edmonds-Karp mapping == our bipartite matching
    sinabs_cores = [net.layer2core_map[k] for k in sorted(net.dynapcnn_layers)]
    assert sinabs_cores == image.core_order() == list(report.core_assignment)
    for layer, core_id in zip(layers, sinabs_cores):
        ours = image.core(core_id)
        # discretized weights and thresholds of sinabs' DynapcnnLayer
        np.testing.assert_array_equal(layer.conv_layer.weight.detach().numpy(), ours.weights.astype(np.float32))
        assert int(layer.spk_layer.spike_threshold) == ours.threshold_high
        assert int(layer.spk_layer.min_v_mem) == ours.threshold_low
        # what sinabs' config builder writes into the (real or double) samna configuration
        cfg = config.cnn_layers[core_id]
        np.testing.assert_array_equal(np.asarray(cfg.weights), ours.weights.transpose(0, 1, 3, 2))
        assert cfg.threshold_high == ours.threshold_high and cfg.threshold_low == ours.threshold_low
        assert list(cfg.biases) == ours.biases.tolist()
        assert bool(cfg.return_to_zero) == (ours.reset_mode == "zero")
        enabled = [(d.layer, d.pooling) for d in cfg.destinations if d.enable]
        assert enabled == [(d.core, d.pooling) for d in ours.destinations]
        dims = cfg.dimensions
        assert dims["kernel_size"] == ours.kernel_size
        assert (dims["stride"]["y"], dims["stride"]["x"]) == ours.stride
        assert (dims["padding"]["y"], dims["padding"]["x"]) == ours.padding
        assert dims["output_shape"]["feature_count"] == ours.output_shape[0]
        assert (dims["output_shape"]["size"]["y"], dims["output_shape"]["size"]["x"]) == ours.output_shape[1:]
    # per-core memory: sinabs' memory_summary formula == ours
    summary = net.memory_summary()
    for k, core_id in zip(sorted(net.dynapcnn_layers), sinabs_cores):
        mem = image.core(core_id).memory()
        assert summary["kernel"][k] == mem["kernel"] and summary["neuron"][k] == mem["neuron"]


def test_sinabs_discretized_network_spikes_equal_ours(sinabs_dynapcnn):
    """sinabs' own discretized network, run in time-binned mode, spikes exactly like our integer model."""
    model = _model("speck3c1fc", 4.0, seed=0)
    _, report = export_chip_image(model)
    chip = report.extra["chip_model"]
    ours = discretized_chip_model(chip, report.extra["chip_layers"], report.extra["discrete"])
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 2, 34, 34, generator=g) < 0.3).float() * 3  # [T, B=1, C, H, W]
    expected = run_chip_model(ours, x)
    net = sinabs_dynapcnn.DynapcnnNetwork(chip, input_shape=(2, 34, 34), discretize=True, dvs_input=False)
    got = from_sinabs_layout(net(to_sinabs_layout(x)), 8).flatten(2)
    assert expected.sum() > 0
    assert torch.equal(got, expected)
