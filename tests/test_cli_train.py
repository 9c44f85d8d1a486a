"""`flexsnn train / eval / calibrate-bn / search`: exit codes, outputs, config precedence."""

from __future__ import annotations

import json

import pytest

from flexsnn.cli import main
from flexsnn.errors import ConfigError


def test_help_texts_have_examples(capsys):
    for cmd in ("train", "eval", "calibrate-bn", "search"):
        assert main([cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"flexsnn {cmd} --" in out and "Examples:" in out


def test_config_precedence(tmp_path):
    from flexsnn.commands.train import parse_int_list, resolve_train_config

    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 0.01, "epochs": 7, "T": 6, "scheme": {"name": "mtt", "s": 2}}))
    cfg = resolve_train_config(f, {"lr": 0.5, "epochs": None}, {"s": None, "name": None})
    assert cfg.lr == 0.5 and cfg.epochs == 7 and cfg.scheme.name == "mtt" and cfg.scheme.s == 2
    assert cfg.scheme.T == 6 and cfg.batch_size == 32
    assert parse_int_list("1-3,8", field="--T") == [1, 2, 3, 8]
    with pytest.raises(ConfigError):
        parse_int_list("a-b", field="--T")
    f.write_text(json.dumps({"nonsense": 1}))
    with pytest.raises(ConfigError):
        resolve_train_config(f, {}, {})


def test_bad_options_exit_nonzero(tmp_path, capsys):
    assert main(["train", "--scheme", "xyz", "--out", str(tmp_path / "x")]) == 1
    assert "scheme.name" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "never")]) == 1
    assert main(["train", "--epochs", "two"]) == 2


@pytest.mark.slow
def test_train_eval_search_calibrate_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--scheme", "mtt", "--T", "3", "--s", "2", "--epochs", "1", "--limit", "16",
            "--test-limit", "8", "--batch-size", "8", "--out", str(run)]
    assert main(args) == 0
    ck = run / "final.safetensors"
    assert ck.is_file() and (run / "metrics.jsonl").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["scheme"]["name"] == "mtt" and cfg["config"]["scheme"]["T"] == 3
    capsys.readouterr()
    ev = tmp_path / "eval"
    assert main(["eval", "-c", str(ck), "-c", str(ck), "--T", "1-3", "--config", "3,2,1,1",
                 "--limit", "8", "--out", str(ev)]) == 0
    rep = json.loads((ev / "eval.json").read_text())
    assert len(rep["checkpoints"]) == 2
    first = next(iter(rep["checkpoints"].values()))
    assert set(first["accuracy_per_T"]) == {"1", "2", "3"} and first["configs"][0]["config"] == [3, 2, 1, 1]
    assert (ev / "accuracy.png").stat().st_size > 1000 and rep["t_protocol"] == "rebin"
    assert main(["eval", "-c", str(ck), "--T", "1-3", "--limit", "8", "--t-protocol", "prefix",
                 "--out", str(ev)]) == 0
    assert json.loads((ev / "eval.json").read_text())["t_protocol"] == "prefix"
    assert main(["eval", "-c", str(ck), "--T", "4", "--limit", "8", "--t-protocol", "prefix",
                 "--out", str(ev)]) == 1
    assert "prefix" in capsys.readouterr().err
    se = tmp_path / "search"
    assert main(["search", "-c", str(ck), "--n-fit", "6", "--n-holdout", "2", "--limit", "8",
                 "--budget-T", "2", "--out", str(se)]) == 0
    doc = json.loads((se / "search.json").read_text())
    assert len(doc["rates"]) == 4 and doc["result"]["energy"] <= doc["budget"] + 1e-9
    assert main(["calibrate-bn", "-c", str(ck), "--batches", "1"]) == 1   # no BN in this model
    assert "BatchNorm" in capsys.readouterr().err


def test_chip_faithful_options_train_and_eval_report_synops(tmp_path, capsys):
    """issue 15: drawn input T (log-uniform), floor, SynOps budget and fake quantization from the
    command line; eval reports SynOps per sample and an energy estimate when asked."""
    run = tmp_path / "chip"
    args = ["train", "--scheme", "mtt", "--T", "3", "--s", "2", "--r-right", "3", "--t-input-range", "1,6",
            "--t-sampling", "log-uniform", "--min-v-mem", "-4", "--deploy-min-v-mem", "-16",
            "--synops-budget", "1e5", "--qat",
            "--epochs", "1", "--limit", "16", "--test-limit", "8", "--batch-size", "8", "--out", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "SynOps/sample" in out
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["scheme"]["t_input_max"] == 6 and cfg["scheme"]["sampling"] == "log-uniform"
    assert cfg["qat"] is True and cfg["synops_budget"] == 1e5
    assert cfg["model_kwargs"]["neuron"]["min_v_mem"] == -4.0 and cfg["deploy_min_v_mem"] == -16.0
    # the final checkpoint carries the deployed floor, the epoch checkpoints the trained one
    assert json.loads((run / "final.json").read_text())["meta"]["model_kwargs"]["neuron"]["min_v_mem"] == -16.0
    assert json.loads((run / "last.json").read_text())["meta"]["model_kwargs"]["neuron"]["min_v_mem"] == -4.0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["synops_per_sample"] > 0 and row["test_synops_per_sample"] > 0
    ev = tmp_path / "eval"
    assert main(["eval", "-c", str(run / "final.safetensors"), "--T", "2,3", "--limit", "8",
                 "--pj-per-synop", "2.0", "--out", str(ev)]) == 0
    assert "SynOps per sample" in capsys.readouterr().out
    entry = next(iter(json.loads((ev / "eval.json").read_text())["checkpoints"].values()))
    s3 = entry["synops_per_sample"]["3"]
    assert s3 > 0 and entry["energy_uj_per_sample"]["3"] == pytest.approx(s3 * 2.0 * 1e-6)
    assert main(["train", "--t-input-range", "1,2,3", "--out", str(tmp_path / "bad")]) == 1
    assert "--t-input-range" in capsys.readouterr().err
    assert main(["train", "--backprop", "rate", "--qat", "--out", str(tmp_path / "bad")]) == 1
    assert "--qat" in capsys.readouterr().err


def test_distill_from_trains_against_a_teacher_and_refuses_rate_backprop(tmp_path, capsys):
    """The chip recipe's distillation from the command line (issue 15): the teacher's path and
    weight reach the config, training runs with it, and rate-based backprop is refused by name."""
    args = ["--T", "3", "--epochs", "1", "--limit", "16", "--test-limit", "8", "--batch-size", "8"]
    teacher = tmp_path / "teacher"
    assert main(["train", "--scheme", "sdt", *args, "--out", str(teacher)]) == 0
    student = tmp_path / "student"
    assert main(["train", "--scheme", "mtt", "--s", "2", *args, "--distill-from", str(teacher / "final.safetensors"),
                 "--distill-weight", "2", "--distill-temperature", "3", "--out", str(student)]) == 0
    cfg = json.loads((student / "config.json").read_text())["config"]
    assert cfg["distill_checkpoint"] == str(teacher / "final.safetensors")
    assert (cfg["distill_weight"], cfg["distill_temperature"]) == (2.0, 3.0)
    capsys.readouterr()
    assert main(["train", "--backprop", "rate", "--distill-from", str(teacher / "final.safetensors"),
                 "--out", str(tmp_path / "bad")]) == 1
    assert "distill_checkpoint" in capsys.readouterr().err
    assert main(["train", "--distill-weight", "0", "--out", str(tmp_path / "bad")]) != 0
