"""``flexsnn simulate``: help, a real run on N-MNIST recordings, named errors."""

from __future__ import annotations

import json

import pytest

from chip_builders import nmnist_image
from flexsnn.cli import main


def test_help_has_examples(capsys):
    assert main(["simulate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "flexsnn simulate --chip mtt.chip --backend time-binned --T 10" in out
    assert "--workers" in out


@pytest.mark.parametrize("backend", ["async", "time-binned"])
def test_simulate_on_real_nmnist(tmp_path, nmnist_small, capsys, backend):
    chip = nmnist_image(1).save(tmp_path / "m.chip")
    out = tmp_path / "run"
    code = main(["simulate", "--chip", str(chip), "--dataset", "nmnist", "--root", str(nmnist_small),
                 "--limit", "6", "--backend", backend, "--T", "5", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "accuracy" in text and "SynOps / sample" in text
    doc = json.loads((out / "eval.json").read_text())
    assert doc["samples"] == 6 and doc["backend"] == backend and doc["synops_mean"] > 0
    assert len(doc["per_sample"]) == 6 and doc["provenance"]["config"]["limit"] == 6
    assert (out / "raster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_named_errors(tmp_path, capsys):
    assert main(["simulate", "--chip", str(tmp_path / "missing.chip")]) != 0
    assert "chip image not found" in capsys.readouterr().err
    chip = nmnist_image(1).save(tmp_path / "m.chip")
    assert main(["simulate", "--chip", str(chip), "--backend", "speck9"]) != 0
    assert "--backend" in capsys.readouterr().err
    assert main(["simulate", "--chip", str(chip), "--dataset", "cifar"]) != 0
    assert "unknown dataset" in capsys.readouterr().err
