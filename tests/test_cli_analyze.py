"""`flexsnn analyze robustness | gradients | early-exit | early-stop` (commands/analyze.py)."""

from __future__ import annotations

import json

import pytest
import torch

from flexsnn.cli import main
from flexsnn.converters.export import export_chip_image
from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
from flexsnn.models.zoo import build_model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed, name in ((0, "sdt"), (1, "mtt")):
        torch.manual_seed(seed)
        model = build_model("speck3c1fc", T=4)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)
        path = d / f"{name}.safetensors"
        save_checkpoint(path, model, CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                                    neuron_profile="speck-iaf", stages=model.stage_names,
                                                    t_range=(1, 4), dataset="saccade-mnist"))
        paths.append(path)
    image, _ = export_chip_image(model)
    chip = d / "mtt.chip"
    image.save(chip)
    return paths, chip


@pytest.mark.slow
def test_robustness_writes_json_and_pngs(ckpts, tmp_path):
    (sdt, mtt), _ = ckpts
    code = main(["analyze", "robustness", "-c", str(sdt), "-c", str(mtt), "--label", "sdt", "--label", "mtt",
                 "--limit", "10", "--sigma", "0,0.5", "--repeats", "2", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads((tmp_path / "robustness.json").read_text())
    for name in ("sdt", "mtt"):
        w = res[name]["weight_noise"]
        assert res[name]["T"] == 4 and w["sigma"] == [0.0, 0.5] and len(w["accuracy"][1]) == 2
        assert w["mean"][0] == res[name]["clean_accuracy"] == res[name]["input_noise"]["mean"][0]
    assert "machine" in res and (tmp_path / "robustness_weight.png").stat().st_size > 0
    assert (tmp_path / "robustness_input.png").stat().st_size > 0


def test_gradients_and_early_exit(ckpts, tmp_path):
    (sdt, mtt), _ = ckpts
    assert main(["analyze", "gradients", "-c", str(sdt), "-c", str(mtt), "--limit", "10",
                 "--out", str(tmp_path)]) == 0
    g = json.loads((tmp_path / "gradients.json").read_text())
    assert g["sdt"]["n"] == 10 and g["sdt"]["grad_norm_w"] >= 0 and (tmp_path / "gradients.png").exists()
    assert main(["analyze", "early-exit", "-c", str(mtt), "--limit", "10", "--thresholds", "0,2",
                 "--out", str(tmp_path)]) == 0
    e = json.loads((tmp_path / "early_exit.json").read_text())
    assert e["mtt"]["mean_T"] == [1.0, 4.0] and (tmp_path / "early_exit.png").exists()


def test_early_stop_on_chip(ckpts, tmp_path):
    _, chip = ckpts
    assert main(["analyze", "early-stop", "--chip", str(chip), "--limit", "5", "--k", "1,1000000",
                 "--out", str(tmp_path)]) == 0
    e = json.loads((tmp_path / "early_stop.json").read_text())
    assert e["mtt"]["fraction_of_events"][1] == 1.0
    assert e["mtt"]["accuracy"][1] == e["mtt"]["full"]["accuracy"]


def test_bad_sigma_is_a_named_error(ckpts, tmp_path, capsys):
    (sdt, _), _ = ckpts
    code = main(["analyze", "robustness", "-c", str(sdt), "--sigma", "a,b", "--out", str(tmp_path)])
    assert code != 0
    assert "--sigma" in capsys.readouterr().err
    code = main(["analyze", "robustness", "-c", str(sdt), "--label", "x", "--label", "y", "--out", str(tmp_path)])
    assert code != 0 and "--label" in capsys.readouterr().err


@pytest.mark.slow
def test_simulate_early_exit_option(ckpts, tmp_path):
    _, chip = ckpts
    assert main(["simulate", "--chip", str(chip), "--limit", "3", "--early-exit", "1,1000000",
                 "--out", str(tmp_path)]) == 0
    e = json.loads((tmp_path / "early_stop.json").read_text())
    assert e["mtt"]["fraction_of_events"][1] == 1.0 and e["mtt"]["full"]["n"] == 3
    assert (tmp_path / "eval.json").exists() and (tmp_path / "early_stop.png").exists()
    assert main(["simulate", "--chip", str(chip), "--limit", "2", "--backend", "time-binned",
                 "--early-exit", "1", "--out", str(tmp_path / "tb")]) != 0


@pytest.mark.slow
def test_eval_early_exit_option(ckpts, tmp_path):
    (_, mtt), _ = ckpts
    assert main(["eval", "-c", str(mtt), "--T", "1,4", "--limit", "5", "--early-exit", "0,2",
                 "--out", str(tmp_path)]) == 0
    e = json.loads((tmp_path / "early_exit.json").read_text())
    assert e["mtt"]["T_max"] == 4 and e["mtt"]["mean_T"] == [1.0, 4.0]
    assert (tmp_path / "eval.json").exists() and (tmp_path / "early_exit.png").exists()
