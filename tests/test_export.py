"""export_chip_image on the zoo Speck nets: valid images, per-core memory == formulas, readout, report, PNG."""

from __future__ import annotations

import pytest
import torch

from flexsnn.converters.chip_image import ChipImage, check_chip_image
from flexsnn.converters.export import export_chip_image
from flexsnn.converters.speck2e import kernel_memory_entries, neuron_memory_entries
from flexsnn.errors import ChipConstraintError
from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
from flexsnn.models.zoo import build_model


def _model(name="speck3c1fc", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(name, **kw)


# expected (c_in, c_out, k, out_h, out_w) per layer, from the zoo docstrings
GEOMETRY = {
    "speck3c1fc": [(2, 8, 3, 34, 34), (8, 16, 3, 17, 17), (16, 16, 3, 4, 4), (16, 10, 4, 1, 1)],
    "speck4c": [(2, 16, 3, 34, 34), (16, 32, 3, 17, 17), (32, 64, 3, 8, 8), (64, 64, 3, 4, 4), (64, 10, 4, 1, 1)],
}


@pytest.mark.parametrize("name", ["speck3c1fc", "speck4c"])
def test_zoo_nets_export_validate_and_memory_formulas(name):
    image, report = export_chip_image(_model(name))
    check_chip_image(image)
    assert image.input.shape == (2, 34, 34) and image.input.destinations == (image.core_order()[0],)
    assert image.output_core == image.core_order()[-1] and image.readout is None
    assert len(image.cores) == len(GEOMETRY[name])
    for core_id, (c_in, c_out, k, h, w) in zip(image.core_order(), GEOMETRY[name]):
        c = image.core(core_id)
        assert c.weights.shape == (c_out, c_in, k, k) and c.output_shape == (c_out, h, w)
        mem = c.memory()
        assert mem["kernel"] == kernel_memory_entries(c_in, c_out, k, k)
        assert mem["neuron"] == neuron_memory_entries(c_out, h, w)
    # hand-computed for speck3c1fc conv1: 2 * 2^(4+3), 8 * 2^(6+6)
    if name == "speck3c1fc":
        assert image.core(0).memory() == {"kernel": 256, "neuron": 32768, "bias": 8}
        assert [d.pooling for c in image.cores for d in c.destinations] == [2, 2, 1]
    assert [r.core for r in report.layers] == list(report.core_assignment) == image.core_order()
    assert all(r.n_clipped == 0 for r in report.layers)
    assert image.layer_scales == tuple(r.scale for r in report.layers)


def test_readout_places_class_k_on_channel_4k():
    image, report = export_chip_image(_model(), readout=True)
    out = image.core(image.output_core)
    assert image.readout is not None and image.readout.num_classes == 10
    assert out.output_shape[0] == 37
    plain, _ = export_chip_image(_model())
    ref = plain.core(plain.output_core).weights
    for k in range(10):
        assert (out.weights[4 * k] == ref[k]).all()
    others = [ch for ch in range(37) if ch % 4]
    assert not out.weights[others].any()
    assert "4(k-1)" in report.readout


def test_readout_refused_beyond_15_classes():
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(_model(num_classes=16), readout=True)
    assert "readout" in str(err.value) and "class counts" in str(err.value)


def test_user_core_order_used_and_checked():
    image, _ = export_chip_image(_model(), core_order=[2, 1, 0, 4])
    assert image.core_order() == [2, 1, 0, 4]
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(_model(), core_order=[5, 1, 0, 4])  # 32Ki neurons on a 16Ki core
    assert "neuron memory on core 5" in str(err.value)


def test_checkpoint_path_export_and_save_load(tmp_path):
    model = _model()
    ck = save_checkpoint(tmp_path / "ck.safetensors", model,
                         CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                        neuron_profile="speck-iaf"))
    image, _ = export_chip_image(ck)
    assert image.source == str(ck)
    loaded = ChipImage.load(image.save(tmp_path / "m.chip"))
    for a, b in zip(image.cores, loaded.cores):
        assert (a.weights == b.weights).all() and a.threshold_high == b.threshold_high
    assert loaded.core_order() == image.core_order()


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def checkpoint(tmp_path):
    model = _model()
    return save_checkpoint(tmp_path / "ck.safetensors", model,
                           CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                          neuron_profile="speck-iaf"))


@pytest.mark.parametrize("cmd", ["export", "inspect", "validate"])
def test_cli_help_has_examples(cmd, capsys):
    from flexsnn.cli import main

    assert main([cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:\n" in out and f"  flexsnn {cmd} " in out


def test_cli_export_inspect_validate(checkpoint, tmp_path, capsys):
    from flexsnn.cli import main

    chip = tmp_path / "m.chip"
    assert main(["export", "-c", str(checkpoint), "-o", str(chip), "--nir", str(tmp_path / "m.nir"),
                 "--onnx", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "output core 3" in out and "scale" in out
    for f in ("m.chip", "m.chip.memory.png", "m.nir", "m.onnx"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "m.chip.memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", str(chip), "--png", str(tmp_path / "i.png")]) == 0
    assert "kernel mem" in capsys.readouterr().out and (tmp_path / "i.png").exists()
    assert main(["validate", str(chip)]) == 0 and main(["validate", str(checkpoint)]) == 0


def test_cli_errors_are_named(checkpoint, tmp_path, capsys):
    from flexsnn.cli import main

    assert main(["export", "-c", str(checkpoint), "-o", str(tmp_path / "x.chip"), "--core-order", "5,1,2,3"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "neuron memory on core 5" in err and "over by 16384" in err
    bad = tmp_path / "bad.chip"
    bad.write_bytes(b"not a zip")
    assert main(["validate", str(bad)]) == 1
    assert "not a readable chip image" in capsys.readouterr().err


def test_allow_leak_exports_biases_as_leak():
    model = _model(batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    model.eval()
    with pytest.raises(ChipConstraintError, match="biases"):
        export_chip_image(model)
    image, report = export_chip_image(model, allow_leak=True)
    assert report.folded_bn == 3 and report.leak_layers == (0, 3, 6)
    leaky = [c for c in image.cores if c.leak_enabled]
    assert len(leaky) == 3 and all(c.biases.any() for c in leaky)
    assert any("leak" in w for w in report.warnings)


def test_converters_never_import_training_or_samna():
    """No converter module imports flexsnn.training; samna / sinabs.backend are never imported."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "converters").glob("*.py")) + [root / "commands" / "export.py"]
    for f in files:
        if f.name == "samna_config.py":  # the hardware helper's lazy samna writer
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("flexsnn.training", "samna", "sinabs.backend")), (f.name, name)


def test_min_v_mem_none_refused_end_to_end():
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(_model(neuron={"min_v_mem": None}))
    hits = [v for v in err.value.violations if v.field == "min_v_mem"]
    assert len(hits) == 4 and hits[0].where == "layer 1 (IAFSqueeze, from 'conv1.1')" and "zeroes small weights" in hits[0].fix


# ---------------------------------------------------------------------------- threshold scaling
def test_threshold_scale_changes_only_that_core_and_cuts_the_next_cores_synops():
    import numpy as np

    from flexsnn.converters.thresholds import parse_threshold_scale, scale_thresholds
    from flexsnn.data.events import make_events
    from flexsnn.deploy.async_sim import AsyncSimulator
    from flexsnn.errors import ConfigError

    model = _model(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0).add_(0.08)  # enough activity to reach the output layer
    image, _ = export_chip_image(model)
    scaled = scale_thresholds(image, parse_threshold_scale("0=2"))
    a, b = image.cores[0], scaled.cores[0]
    assert b.threshold_high == round(2 * a.threshold_high) and b.threshold_low == a.threshold_low
    assert np.array_equal(b.weights, a.weights)
    assert [c.threshold_high for c in scaled.cores[1:]] == [c.threshold_high for c in image.cores[1:]]
    rng = np.random.default_rng(0)
    n = 2000
    ev = make_events(rng.integers(5, 29, n), rng.integers(5, 29, n), rng.integers(0, 2, n),
                     np.sort(rng.integers(0, 300_000, n)))

    def core_synops(img):
        sim = AsyncSimulator()
        sim.load(img)
        return sim.run(ev).synops

    before, after = core_synops(image), core_synops(scaled)
    first, second = image.cores[0].core, image.cores[1].core
    assert after[first] == before[first]  # its input is the sensor's: unchanged
    assert 0 < after[second] < before[second]  # fewer events from the first core
    assert parse_threshold_scale("0=2, 2=1.5") == {0: 2.0, 2: 1.5}
    for bad in ("0", "x=2", "0=2,0=3", ""):
        with pytest.raises(ConfigError, match="--threshold-scale"):
            parse_threshold_scale(bad)
    with pytest.raises(ConfigError, match="0..3"):
        scale_thresholds(image, {4: 2.0})
    with pytest.raises(ConfigError, match="> 0"):
        scale_thresholds(image, {0: 0.0})
    with pytest.raises(ChipConstraintError):
        scale_thresholds(image, {0: 1e6})  # past the 16-bit state


def test_cli_export_threshold_scale(checkpoint, tmp_path, capsys):
    from flexsnn.cli import main

    assert main(["export", "-c", str(checkpoint), "-o", str(tmp_path / "a.chip"), "--no-png"]) == 0
    assert main(["export", "-c", str(checkpoint), "-o", str(tmp_path / "b.chip"), "--no-png",
                 "--threshold-scale", "0=2"]) == 0
    assert "core position 0 x2" in capsys.readouterr().out
    a, b = ChipImage.load(tmp_path / "a.chip"), ChipImage.load(tmp_path / "b.chip")
    assert b.cores[0].threshold_high == round(2 * a.cores[0].threshold_high)
    assert main(["export", "-c", str(checkpoint), "-o", str(tmp_path / "c.chip"), "--threshold-scale", "9=2"]) == 1
