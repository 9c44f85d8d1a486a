"""`flexsnn eval --calibration`: per-step accuracy / ECE / AdaECE and a reliability diagram."""

from __future__ import annotations

import json

import pytest
import torch

from flexsnn.cli import main
from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
from flexsnn.models.zoo import build_model


@pytest.mark.slow
def test_eval_calibration_option(tmp_path):
    torch.manual_seed(0)
    model = build_model("speck3c1fc", T=3)
    meta = CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs, neuron_profile="speck-iaf",
                          stages=model.stage_names, scheme={"name": "sdt"}, t_range=(3, 3), dataset="saccade-mnist")
    ck = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    out = tmp_path / "eval"
    assert main(["eval", "-c", str(ck), "--T", "1,3", "--limit", "6", "--calibration", "--out", str(out)]) == 0
    doc = json.loads((out / "calibration.json").read_text())
    entry = doc["checkpoints"]["sdt"]
    assert doc["T"] == 3 and len(entry["accuracy_per_t"]) == len(entry["ece_per_t"]) == len(entry["adaece_per_t"]) == 3
    assert entry["n_samples"] == 6 and all(0.0 <= e <= 1.0 for e in entry["ece_per_t"])
    # the last step's accuracy equals the plain eval's accuracy at T = 3
    assert entry["accuracy_per_t"][-1] == pytest.approx(
        json.loads((out / "eval.json").read_text())["checkpoints"]["sdt"]["accuracy_per_T"]["3"])
    assert (out / "reliability_sdt.png").stat().st_size > 1000
