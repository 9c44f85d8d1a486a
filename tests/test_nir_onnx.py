"""Interchange: NIR (nir.write -> nir.read -> sinabs.from_nir) and one-step ONNX (onnxruntime over T)
give exactly the chip-ready model's spikes."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from flexsnn.converters.chip_model import run_chip_model
from flexsnn.converters.discretize import discretized_chip_model
from flexsnn.converters.export import export_chip_image
from flexsnn.converters.nir_export import export_nir, load_nir, run_nir_model, to_nir_graph
from flexsnn.converters.onnx_export import export_onnx, run_onnx
from flexsnn.models.zoo import build_model


@pytest.fixture(scope="module", params=["float", "discrete"])
def chip_model(request):
    torch.manual_seed(5)
    model = build_model("speck3c1fc")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    _, report = export_chip_image(model)
    chip = report.extra["chip_model"]
    if request.param == "discrete":
        chip = discretized_chip_model(chip, report.extra["chip_layers"], report.extra["discrete"])
    return request.param, chip


def _frames(T=5, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, 2, 34, 34, generator=g) < 0.3).float() * 2


def test_nir_graph_has_every_shape_field():
    torch.manual_seed(0)
    _, report = export_chip_image(build_model("speck3c1fc"))
    graph = to_nir_graph(report.extra["chip_model"], (2, 34, 34))
    for key, node in graph.nodes.items():
        assert all(v is not None for v in node.input_type.values()), key
        assert all(v is not None for v in node.output_type.values()), key
    assert tuple(graph.nodes["0"].input_shape) == (34, 34)
    assert list(graph.nodes["2"].output_type["output"]) == [8, 17, 17]


def test_nir_round_trip_exact(chip_model, tmp_path):
    kind, chip = chip_model
    path = export_nir(chip, tmp_path / "m.nir", input_shape=(2, 34, 34))
    assert isinstance(nir.read(str(path)), nir.NIRGraph)
    x = _frames()
    ref = run_chip_model(chip, x)
    assert ref.sum() > 0
    back = load_nir(path, batch_size=x.shape[1])
    assert torch.equal(run_nir_model(back, x), ref)


def test_onnx_one_step_over_T_exact(chip_model, tmp_path):
    kind, chip = chip_model
    import onnx

    path = export_onnx(chip, tmp_path / "m.onnx", input_shape=(2, 34, 34))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["x", "v0", "v1", "v2", "v3"]
    assert [o.name for o in graph.output] == ["spikes", "v0_next", "v1_next", "v2_next", "v3_next"]
    x = _frames(B=3, seed=1)
    ref = run_chip_model(chip, x)
    assert ref.sum() > 0
    out = run_onnx(path, x.numpy())
    np.testing.assert_array_equal(out, ref.detach().numpy())
