"""Bring your own model: NIR graphs (hand-built and from other tools) and plain torch/sinabs
networks to the chip; NIR round trip; the Speck family's limits tables."""

from __future__ import annotations

import json
from importlib.metadata import version

import nir
import numpy as np
import pytest
import sinabs.layers as sl
import torch
from torch import nn

from flexsnn.cli import main
from flexsnn.converters.chip_image import ChipImage
from flexsnn.converters.chip_model import run_chip_model
from flexsnn.converters.chips import PROFILES, SPECK2E_PROFILE, ChipProfile, Fact, get_profile
from flexsnn.converters.export import export_chip_image
from flexsnn.converters.from_nir import nir_to_sequential
from flexsnn.converters.nir_export import export_nir
from flexsnn.converters.speck2e import SPECK2E
from flexsnn.errors import ChipConstraintError, ConfigError
from flexsnn.models.zoo import build_model


def image_doc(image: ChipImage) -> dict:
    """Every field of an image except ``source`` (provenance), arrays as lists."""
    cores = []
    for c in image.cores:
        d = {k: getattr(c, k) for k in c.__dataclass_fields__}
        d["weights"], d["biases"] = c.weights.tolist(), c.biases.tolist()
        d["dtypes"] = (str(c.weights.dtype), str(c.biases.dtype))
        cores.append(d)
    return {"input": image.input, "cores": cores, "output_core": image.output_core, "readout": image.readout,
            "chip": image.chip, "layer_scales": image.layer_scales, "notes": image.notes,
            "format_version": image.format_version}


def if_graph(kernel: int = 3, *, leaky: bool = False, seed: int = 0) -> nir.NIRGraph:
    """Input (2,34,34) -> Conv2d 2->4 stride 2 -> IF -> SumPool 2 -> Flatten -> Affine -> IF (10)."""
    rng = np.random.default_rng(seed)
    pad = kernel // 2
    h = (34 + 2 * pad - kernel) // 2 + 1
    w1 = rng.uniform(0.0, 0.6, (4, 2, kernel, kernel)).astype(np.float32)
    w2 = rng.uniform(-0.2, 0.5, (10, 4 * (h // 2) ** 2)).astype(np.float32)
    neuron = (nir.LIF(tau=np.full((4, h, h), 0.02), r=np.ones((4, h, h)), v_leak=np.zeros((4, h, h)),
                      v_threshold=np.ones((4, h, h))) if leaky else
              nir.IF(r=np.ones((4, h, h)), v_threshold=np.ones((4, h, h))))
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 34, 34])}),
        "conv": nir.Conv2d(input_shape=(34, 34), weight=w1, stride=(2, 2), padding=(pad, pad), dilation=(1, 1),
                           groups=1, bias=np.zeros(4, np.float32)),
        "if1": neuron,
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, h // 2, h // 2])}),
        "fc": nir.Affine(weight=w2, bias=np.zeros(10, np.float32)),
        "if2": nir.IF(r=np.ones(10), v_threshold=np.full(10, 2.0)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    keys = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(keys[:-1], keys[1:])))


def tutorial_net() -> nn.Sequential:
    """A plain sinabs network written the way sinabs' N-MNIST tutorials write one."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 8, kernel_size=(3, 3), padding=(1, 1), bias=False),
        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(8, 16, kernel_size=(3, 3), padding=(1, 1), bias=False),
        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
        nn.AvgPool2d(2, 2),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10, bias=False),
        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
    )


def _frames(T=6, B=2, seed=0, shape=(2, 34, 34)):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < 0.3).float() * 2


# --------------------------------------------------------------------------- NIR in
def test_hand_built_if_graph_exports_and_flexsnn_simulate_runs_it(tmp_path, capsys):
    path = tmp_path / "if.nir"
    nir.write(str(path), if_graph())
    chip = tmp_path / "if.chip"
    assert main(["export", "--from-nir", str(path), "--out", str(chip), "--no-png"]) == 0
    out = capsys.readouterr().out
    assert "thr_err" in out and f"wrote {chip}" in out
    image = ChipImage.load(chip)
    assert image.input.shape == (2, 34, 34) and len(image.cores) == 2
    assert [c.name for c in image.cores] == ["conv", "fc"] and image.num_classes == 10
    run = tmp_path / "run"
    code = main(["simulate", "--chip", str(chip), "--limit", "3", "--out", str(run)])
    text = capsys.readouterr().out
    assert code == 0, text
    doc = json.loads((run / "eval.json").read_text())
    assert doc["samples"] == 3 and doc["synops_mean"] > 0


def test_if_graph_spikes_equal_the_converted_model():
    model, names = nir_to_sequential(if_graph())
    assert list(names.values()) == ["conv", "if1", "pool", "flat", "fc", "if2"]
    _, report = export_chip_image(if_graph())
    chip = report.extra["chip_model"]
    # the graph's arithmetic by hand: conv -> IF (subtract, floor -thr) -> sum pool -> affine -> IF
    x = _frames()
    ref = run_chip_model(chip, x)
    g = if_graph()
    w1, w2 = torch.tensor(g.nodes["conv"].weight), torch.tensor(g.nodes["fc"].weight)
    v1, v2, outs = 0, 0, []
    for t in range(x.shape[0]):
        v1 = v1 + torch.nn.functional.conv2d(x[t], w1, stride=2, padding=1)
        s1 = (v1 > 0) * torch.div(v1, 1.0, rounding_mode="trunc")
        v1 = torch.clamp(v1 - s1, min=-1.0)
        p = torch.nn.functional.avg_pool2d(s1, 2) * 4
        v2 = v2 + p.flatten(1) @ w2.T
        s2 = (v2 > 0) * torch.div(v2, 2.0, rounding_mode="trunc")
        v2 = torch.clamp(v2 - 2 * s2, min=-2.0)
        outs.append(s2)
    expected = torch.stack(outs)
    assert expected.sum() > 0
    assert torch.allclose(ref, expected, atol=1e-4)


def test_input_shape_from_option_and_named_errors(tmp_path):
    g = if_graph()
    g.nodes["input"] = nir.Input(input_type={"input": np.array([])})
    with pytest.raises(ConfigError, match="--input-shape"):
        export_chip_image(g)
    image, _ = export_chip_image(g, input_shape=(2, 34, 34))
    assert image.input.shape == (2, 34, 34)
    with pytest.raises(ConfigError, match="Input node"):
        export_chip_image(if_graph(), input_shape=(2, 32, 32))


def test_leaky_lif_and_17x17_kernel_refused_by_name_on_the_cli(tmp_path, capsys):
    for kind, graph, words in (("lif", if_graph(leaky=True), ["'if1' (LIF)", "leak (tau)", "retrain with IF"]),
                               ("k17", if_graph(kernel=17), ["(Conv2d, from 'conv')", "kernel_size", "17×17", "<= 16×16"])):
        path = tmp_path / f"{kind}.nir"
        nir.write(str(path), graph)
        code = main(["export", "--from-nir", str(path), "--out", str(tmp_path / f"{kind}.chip")])
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err, err
        for word in words:
            assert word in err, (word, err)
        assert not (tmp_path / f"{kind}.chip").exists()


def test_refused_nodes_recurrence_and_branches_named():
    g = if_graph()
    g.nodes["if1"] = nir.CubaLIF(tau_syn=np.ones(4), tau_mem=np.ones(4), r=np.ones(4), v_leak=np.zeros(4),
                                 v_threshold=np.ones(4), w_in=np.ones(4))
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(g)
    assert "'if1' (CubaLIF)" in str(err.value) and "synaptic current" in str(err.value)
    g = if_graph()
    g.edges.append(("if2", "fc"))
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(g)
    assert "recurrent edge" in str(err.value)
    g = if_graph()
    g.edges.append(("conv", "pool"))
    with pytest.raises(ChipConstraintError, match="branch"):
        export_chip_image(g)


def test_lif_without_leak_is_an_if_and_per_channel_thresholds_fold_exactly():
    base, _ = export_chip_image(if_graph())
    g = if_graph()
    shape = g.nodes["if1"].v_threshold.shape
    g.nodes["if1"] = nir.LIF(tau=np.full(shape, np.inf), r=np.full(shape, np.inf), v_leak=np.zeros(shape),
                             v_threshold=np.ones(shape))
    image, _ = export_chip_image(g)
    assert image_doc(image) == image_doc(base)
    # channel c with threshold t_c == weights scaled by max(t)/t_c with one threshold
    thr = np.array([1.0, 2.0, 0.5, 4.0])
    a = if_graph()
    a.nodes["if1"] = nir.IF(r=np.ones(shape), v_threshold=np.broadcast_to(thr[:, None, None], shape).copy())
    b = if_graph()
    b.nodes["conv"].weight = (b.nodes["conv"].weight * (4.0 / thr)[:, None, None, None]).astype(np.float32)
    b.nodes["if1"] = nir.IF(r=np.ones(shape), v_threshold=np.full(shape, 4.0))
    img_a, _ = export_chip_image(a)
    img_b, _ = export_chip_image(b)
    assert image_doc(img_a) == image_doc(img_b)


# --------------------------------------------------------------------------- torch / sinabs in
def test_plain_sinabs_network_exports_and_keeps_its_spikes():
    net = tutorial_net()
    net.insert(3, nn.Dropout2d(0.2))  # any Dropout is dropped
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(6.0)
    image, report = export_chip_image(net, input_shape=(2, 34, 34))
    assert [c.input_shape for c in image.cores] == [(2, 34, 34), (8, 17, 17), (16, 8, 8)]
    assert [d.pooling for c in image.cores for d in c.destinations] == [2, 2]
    # AvgPool -> SumPool with the next weights / 4: exactly the network's spikes
    x = _frames(seed=2)
    from flexsnn.converters.chip_model import from_sinabs_layout, reset_states, set_batch_size, to_sinabs_layout

    net.eval()
    reset_states(net)
    set_batch_size(net, x.shape[1])
    with torch.no_grad():
        ref = from_sinabs_layout(net(to_sinabs_layout(x)), x.shape[0]).flatten(2)
    got = run_chip_model(report.extra["chip_model"], x)
    assert ref.sum() > 0 and torch.equal(got, ref)


def test_sinabs_to_nir_graph_exports_like_the_network():
    """sinabs' own NIR writer (empty shape fields, Affine for Linear) -> the same image."""
    from sinabs.nir import to_nir

    # sinabs' to_nir has no AvgPool2d: its Speck tutorials' SumPool2d variant
    net = nn.Sequential(*[sl.SumPool2d(2) if isinstance(m, nn.AvgPool2d) else m
                          for m in tutorial_net() if not isinstance(m, nn.Dropout)])
    direct, _ = export_chip_image(net, input_shape=(2, 34, 34))
    graph = to_nir(net, torch.zeros(1, 2, 34, 34))
    assert graph.nodes["0"].input_shape is None  # sinabs leaves shape fields empty
    via_nir, _ = export_chip_image(graph)
    assert image_doc(direct) == image_doc(via_nir)


def test_snntorch_graph_or_named_conflict():
    snn = pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install flexsnn[byom])")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, bias=False), snn.Leaky(beta=1.0, init_hidden=True),
                        nn.Flatten(), nn.Linear(4 * 16 * 16, 10, bias=False),
                        snn.Leaky(beta=1.0, init_hidden=True, output=True))
    try:
        graph = export_to_nir(net, torch.zeros(1, 2, 34, 34))
    except TypeError as err:
        if "v_reset" not in str(err):
            raise
        pytest.skip(f"co-install conflict: snnTorch {snn.__version__} writes nir.LIF(v_reset=...), which the "
                    f"project's nir {version('nir')} rejects ({err})")
    image, _ = export_chip_image(graph, input_shape=(2, 34, 34))
    assert len(image.cores) == 2


def test_norse_or_named_conflict():
    try:
        import norse  # noqa: F401
    except ImportError:
        pytest.skip("co-install conflict: norse 1.1.0 requires torch 2.14 (pip would replace the project's "
                    "torch==2.13.0 CPU build), so it is not installed")


def test_rockpool_graph_is_read_and_its_cubalif_refused_by_name(monkeypatch):
    # the PyPI samna placeholder in the venv runs pip when imported; Rockpool imports samna if present
    monkeypatch.setitem(__import__("sys").modules, "samna", None)
    modules = pytest.importorskip("rockpool.nn.modules", reason="Rockpool is not installed (flexsnn[byom])")
    from rockpool.nn.combinators import Sequential

    torch.manual_seed(0)
    graph = modules.to_nir(Sequential(modules.LinearTorch((8, 4)), modules.LIFTorch(4)), torch.zeros(1, 1, 8))
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(graph)
    assert "(CubaLIF)" in str(err.value) and "retrain with IF" in str(err.value)


# --------------------------------------------------------------------------- NIR out and back
@pytest.mark.parametrize("reset,readout", [("subtract", False), ("subtract", True), ("zero", False)])
def test_nir_round_trip_gives_an_identical_chip_image(tmp_path, reset, readout):
    torch.manual_seed(1)
    model = build_model("speck3c1fc")
    if reset == "zero":
        import sinabs.activation as sa

        model = tutorial_net()
        for m in model:
            if isinstance(m, sl.IAF):
                m.reset_fn = sa.MembraneReset()
                m.min_v_mem = torch.nn.Parameter(torch.tensor(-0.5), requires_grad=False)
    image, report = export_chip_image(model, readout=readout)
    assert {c.reset_mode for c in image.cores} == {reset} and (image.readout is not None) == readout
    path = export_nir(report.extra["chip_model"], tmp_path / "m.nir", input_shape=image.input.shape,
                      names=report.extra["source_names"], readout=image.readout)
    graph = nir.read(str(path))
    back, _ = export_chip_image(path)
    assert image_doc(back) == image_doc(image)
    assert back.source == str(path)
    # sinabs' importer reads flexsnn's NIR too
    from sinabs.nir import from_nir

    assert isinstance(from_nir(graph, batch_size=1), nn.Module)


def test_cli_export_nir_then_from_nir(tmp_path, capsys):
    from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(0)
    model = build_model("speck3c1fc")
    ck = save_checkpoint(tmp_path / "m.safetensors", model,
                         CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                        neuron_profile="speck-iaf"))
    assert main(["export", "-c", str(ck), "--out", str(tmp_path / "a.chip"), "--nir", str(tmp_path / "a.nir"),
                 "--readout", "--no-png"]) == 0
    assert main(["export", "--from-nir", str(tmp_path / "a.nir"), "--out", str(tmp_path / "b.chip"),
                 "--no-png"]) == 0
    a, b = ChipImage.load(tmp_path / "a.chip"), ChipImage.load(tmp_path / "b.chip")
    assert a.readout is not None and image_doc(a) == image_doc(b)
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path / "c.chip")]) != 0
    assert "--from-nir" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Speck family
def test_speck2e_profile_is_the_speck2e_table_and_every_fact_is_sourced():
    assert SPECK2E_PROFILE.limits() == SPECK2E
    for p in PROFILES.values():
        for key, fact in p.facts.items():
            assert (fact.value is None) == (fact.source is None), (p.name, key)
    assert get_profile("Speck2F").name == "speck2f"
    with pytest.raises(ConfigError, match="speck2e, speck2f, dynapcnn"):
        get_profile("speck3")


@pytest.mark.parametrize("chip", sorted(PROFILES))
def test_each_chip_profile_validates_its_limits(chip):
    limits = get_profile(chip).limits()
    image, _ = export_chip_image(tutorial_net(), input_shape=(2, 34, 34), chip=chip)
    assert image.chip == chip
    assert all(c.memory()["kernel"] <= limits.kernel_memory[c.core] for c in image.cores)
    k = limits.max_kernel_size + 1
    big = nn.Sequential(nn.Conv2d(2, 4, k, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(big, input_shape=(2, 34, 34), chip=chip)
    assert err.value.chip == chip and "kernel_size" in str(err.value)
    deep = nn.Sequential(*[m for _ in range(limits.n_cores + 1)
                           for m in (nn.Conv2d(2, 2, 1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))])
    with pytest.raises(ChipConstraintError, match="number of cores"):
        export_chip_image(deep, input_shape=(2, 8, 8), chip=chip)
    # more kernel memory than the largest core holds
    c_in = max(limits.kernel_memory) // 16 + 1
    wide = nn.Sequential(nn.Conv2d(2, c_in, 1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                         nn.Conv2d(c_in, 16, 3, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    with pytest.raises(ChipConstraintError, match="kernel memory"):
        export_chip_image(wide, input_shape=(2, 8, 8), chip=chip)


def test_unknown_facts_are_refused_not_guessed():
    with pytest.raises(ChipConstraintError, match="readout_classes.*unknown"):
        export_chip_image(tutorial_net(), input_shape=(2, 34, 34), chip="dynapcnn", readout=True)
    image, _ = export_chip_image(tutorial_net(), input_shape=(2, 34, 34), chip="speck2f", readout=True)
    assert image.readout is not None and image.readout.channel_erratum
    facts = dict(SPECK2E_PROFILE.facts, max_padding=Fact(None, None))
    with pytest.raises(ChipConstraintError, match="max_padding"):
        ChipProfile("speck9", "hypothetical", facts).limits()


def test_validate_takes_nir_graphs_and_a_chip(tmp_path, capsys):
    path = tmp_path / "if.nir"
    nir.write(str(path), if_graph())
    assert main(["validate", str(path), "--chip", "dynapcnn"]) == 0
    assert "fits dynapcnn" in capsys.readouterr().out
    assert main(["validate", str(path), "--chip", "speck3"]) != 0
    assert "--chip" in capsys.readouterr().err


def test_sinabs_from_model_network_exports():
    """sinabs' ANN-to-SNN tutorials: ``from_model(ann, ...)`` gives a Network (spiking_model inside)."""
    from sinabs.from_torch import from_model

    torch.manual_seed(2)
    ann = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 10, bias=False), nn.ReLU())
    net = from_model(ann, input_shape=(2, 34, 34), batch_size=1)
    image, _ = export_chip_image(net, input_shape=(2, 34, 34))
    direct, _ = export_chip_image(net.spiking_model, input_shape=(2, 34, 34))
    assert len(image.cores) == 3 and image_doc(image) == image_doc(direct)


def test_missing_or_damaged_nir_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all")
    for path, words in ((tmp_path / "none.nir", "NIR file not found"), (bad, "not a readable NIR graph")):
        assert main(["export", "--from-nir", str(path), "--out", str(tmp_path / "x.chip")]) != 0
        err = capsys.readouterr().err
        assert words in err and str(path) in err and "Traceback" not in err
    assert main(["export", "--from-nir", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "x.chip")]) != 0
    assert "a .nir file" in capsys.readouterr().err


def test_an_image_exported_for_speck2f_loads_validates_and_simulates_as_speck2f(tmp_path, capsys):
    """A chip image is checked against the device it was exported for (its ``chip`` field)."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                        nn.AvgPool2d(2, 2), nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0), nn.Flatten(),
                        nn.Linear(4 * 9 * 9, 10, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    image, _ = export_chip_image(net, input_shape=(2, 34, 34), chip="speck2f")
    path = image.save(tmp_path / "f.chip")
    assert ChipImage.load(path).chip == "speck2f"
    assert main(["validate", str(path)]) == 0
    assert "fits speck2f" in capsys.readouterr().out
    assert main(["simulate", "--chip", str(path), "--limit", "2", "--out", str(tmp_path / "sim")]) == 0
