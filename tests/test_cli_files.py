"""export / inspect / validate on the command line: outputs never overwrite inputs, inspect is
read-only unless --png is given, tampered images and NaN weights are refused by name,
--trust-edits (inspect, validate, simulate), and validate's loop-gain warning."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from chip_builders import core
from flexsnn.cli import main
from flexsnn.converters.chip_image import JSON_MEMBER, ChipImage, InputConfig
from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
from flexsnn.models.zoo import build_model


def _checkpoint(path, *, nan_layer: str | None = None):
    torch.manual_seed(0)
    model = build_model("speck3c1fc")
    if nan_layer is not None:
        with torch.no_grad():
            dict(model.named_parameters())[nan_layer].view(-1)[0] = float("nan")
    return save_checkpoint(path, model, CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                                       neuron_profile="speck-iaf"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_files")
    ck = _checkpoint(d / "ck.safetensors")
    chip = d / "m.chip"
    assert main(["export", "-c", str(ck), "-o", str(chip), "--no-png"]) == 0
    return ck, chip


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_inspect_writes_nothing_unless_asked(exported, tmp_path, capsys):
    ck, chip = exported
    before = _snapshot(chip.parent)
    assert main(["inspect", str(chip)]) == 0
    assert "kernel mem" in capsys.readouterr().out
    assert _snapshot(chip.parent) == before
    assert main(["inspect", str(chip), "--png", str(tmp_path / "mem.png")]) == 0
    assert (tmp_path / "mem.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,option", [
    (["inspect", "{chip}", "--png", "{chip}"], "--png"),
    (["export", "-c", "{ck}", "-o", "{d}/x.chip", "--onnx", "{ck}"], "--onnx"),
    (["export", "-c", "{ck}", "-o", "{d}/x.chip", "--nir", "{d}/ck.json"], "--nir"),
    (["export", "-c", "{ck}", "-o", "{d}/z.chip", "--nir", "{d}/z.chip"], "--nir"),
    (["export", "-c", "{ck}", "-o", "{ck}"], "--out"),
    (["export", "-c", "{ck}", "-o", "{d}/y.onnx", "--onnx", "{d}/./y.onnx", "--no-png"], "--onnx"),
])
def test_output_equal_to_an_input_is_refused_and_nothing_changes(exported, capsys, args, option):
    ck, chip = exported
    d = chip.parent
    before = _snapshot(d)
    argv = [a.format(chip=chip, ck=ck, d=d) for a in args]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {option}=" in err and "a path other than the" in err and "choose another file name" in err
    assert _snapshot(d) == before  # the input (and everything else) is intact


def _edit(src, dst, fn):
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    doc = json.loads(members[JSON_MEMBER])
    fn(doc)
    members[JSON_MEMBER] = json.dumps(doc).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return dst


def test_tampered_image_refused_and_trust_edits(exported, tmp_path, capsys):
    _, chip = exported
    edited = _edit(chip, tmp_path / "e.chip", lambda d: d["cores"][0].update(threshold_high=d["cores"][0]["threshold_high"] - 1))
    for cmd in ("inspect", "validate"):
        assert main([cmd, str(edited)]) == 1
        err = capsys.readouterr().err
        assert "tampered" in err and "--trust-edits" in err and "Traceback" not in err
        assert main([cmd, str(edited), "--trust-edits"]) == 0
    capsys.readouterr()
    sim = ["simulate", "--chip", str(edited), "--limit", "2", "--out", str(tmp_path / "sim")]
    assert main(sim) == 1
    assert "tampered" in capsys.readouterr().err and not (tmp_path / "sim").exists()
    assert main(sim + ["--trust-edits"]) == 0
    assert (tmp_path / "sim" / "eval.json").is_file()
    capsys.readouterr()
    typed = _edit(chip, tmp_path / "t.chip", lambda d: d["cores"][0].update(stride=[1]))
    assert main(["validate", str(typed), "--trust-edits"]) == 1
    assert "field cores[0].stride = [1] is invalid: expected 2 items" in capsys.readouterr().err


def test_nan_weights_refused_by_layer_name_at_export_and_validate(tmp_path, capsys):
    name = next(n for n, _ in build_model("speck3c1fc").named_parameters())
    ck = _checkpoint(tmp_path / "nan.safetensors", nan_layer=name)
    assert main(["export", "-c", str(ck), "-o", str(tmp_path / "n.chip")]) == 1
    err = capsys.readouterr().err
    assert f"NaN or Inf weights in {name!r}" in err and "--grad-clip" in err
    assert not (tmp_path / "n.chip").exists()
    assert main(["validate", str(ck)]) == 1
    assert f"NaN or Inf weights in {name!r}" in capsys.readouterr().err


def test_validate_warns_on_a_runaway_cycle(tmp_path, capsys):
    """Two cores feeding each other with weight = threshold: valid (the chip supports feedback),
    with a warning naming the cycle and its loop gain."""
    c0 = core(0, (1, 4, 4), [[[[10]]]], dests=[(2, 1)])
    c2 = core(2, (1, 4, 4), [[[[10]]]], dests=[(3, 1)], layer=1)
    c3 = core(3, (1, 4, 4), [[[[12]]]], dests=[(2, 1)], layer=2)
    path = ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0, c2, c3), output_core=3).save(tmp_path / "loop.chip")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr()
    assert "ok:" in out.out and "warning: cycle of cores 2 -> 3 -> 2: loop gain up to 1.2" in out.err
