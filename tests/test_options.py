"""Options: every numeric option has a range checked while the command line is parsed, JSON
values and config-file fields are type-checked, and output paths are checked before work.
Each error is one line naming the option (or field), the value and the limit."""

from __future__ import annotations

import json

import pytest

from flexsnn.cli import main
from flexsnn.errors import ConfigError
from flexsnn.options import check_field_types, check_output_path, check_range, parse_json_object

CK = "missing.safetensors"  # never read: the range check fails first


def _err(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1, (argv, code, err)
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, shown, limit", [
    (["train", "--limit", "-5"], "--limit=-5", "1.."),
    (["train", "--seed", "-1"], "--seed=-1", "0..4294967295"),
    (["train", "--T", "0"], "--T=0", "1..1000"),
    (["train", "--epochs", "0"], "--epochs=0", "1.."),
    (["train", "--batch-size", "0"], "--batch-size=0", "1.."),
    (["train", "--lr", "0"], "--lr=0.0", "> 0.0"),
    (["train", "--lr", "nan"], "--lr=nan", "> 0.0"),
    (["train", "--weight-decay", "-1"], "--weight-decay=-1.0", "0.0..10.0"),
    (["train", "--s", "0"], "--s=0", "1..1000"),
    (["train", "--r-left", "-1"], "--r-left=-1", "0..1000"),
    (["train", "--test-limit", "0"], "--test-limit=0", "1.."),
    (["eval", "-c", CK, "--limit", "-5"], "--limit=-5", "1.."),
    (["analyze", "robustness", "-c", CK, "--limit", "-5"], "--limit=-5", "1.."),
    (["analyze", "robustness", "-c", CK, "--repeats", "0"], "--repeats=0", "1..1000"),
    (["analyze", "early-exit", "-c", CK, "--T", "0"], "--T=0", "1..1000"),
    (["analyze", "gradients", "-c", CK, "--seed", "-1"], "--seed=-1", "0..4294967295"),
    (["eval", "-c", CK, "--seed", "-1"], "--seed=-1", "0.."),
    (["eval", "-c", CK, "--batch-size", "0"], "--batch-size=0", "1.."),
    (["eval", "-c", CK, "--T", "1-1000000"], "--T='1-1000000'", "1..1000"),
    (["eval", "-c", CK, "--T", "0,2"], "--T='0,2'", "1..1000"),
    (["calibrate-bn", "-c", CK, "--batches", "0"], "--batches=0", "1.."),
    (["search", "-c", CK, "--n-fit", "0"], "--n-fit=0", "1..10000"),
    (["search", "-c", CK, "--n-holdout", "-1"], "--n-holdout=-1", "0..10000"),
    (["search", "-c", CK, "--budget-T", "0"], "--budget-T=0", "1..1000"),
    (["search", "-c", CK, "--t-max", "100000"], "--t-max=100000", "1..1000"),
    (["data", "info", "--limit", "0"], "--limit=0", "1.."),
    (["data", "info", "--seed", "-1"], "--seed=-1", "0.."),
    (["data", "prepare", "--seed", "-3"], "--seed=-3", "0.."),
    (["simulate", "--chip", "x.chip", "--seed", "-1"], "--seed=-1", "0.."),
    (["simulate", "--chip", "x.chip", "--sample", "-1"], "--sample=-1", "0.."),
    (["hwtest", "--samples", "0"], "--samples=0", "1.."),
    (["hwtest", "--device-index", "-1"], "--device-index=-1", "0..255"),
    (["demo", "--seed", "-1"], "--seed=-1", "0.."),
    (["demo", "--threads", "0"], "--threads=0", "1..1024"),
    (["demo", "--train-limit", "0"], "--train-limit=0", "1.."),
    (["reproduce", "speck-table", "--data", "x", "--epochs", "0"], "--epochs=0", "1.."),
])
def test_numeric_option_out_of_range_is_one_named_line(argv, shown, limit, capsys):
    err = _err(argv, capsys)
    assert err.startswith("error: ") and shown in err and limit in err, err


def test_model_kwargs_must_be_a_json_object(capsys):
    err = _err(["train", "--model-kwargs", "[1]", "--out", "x"], capsys)
    assert "--model-kwargs='[1]'" in err and "JSON object" in err and "list" in err
    err = _err(["train", "--model-kwargs", "{bad", "--out", "x"], capsys)
    assert "--model-kwargs" in err and "not JSON" in err


def test_config_file_field_of_the_wrong_type_is_named(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": "fast"}))
    err = _err(["train", "--config", str(f), "--out", str(tmp_path / "run")], capsys)
    assert f"{f}: lr='fast'" in err and "a number" in err
    f.write_text(json.dumps({"scheme": {"s": 2.5}}))
    err = _err(["train", "--config", str(f), "--out", str(tmp_path / "run")], capsys)
    assert "scheme.s=2.5" in err and "an integer" in err
    f.write_text(json.dumps({"seed": -1}))
    err = _err(["train", "--config", str(f), "--out", str(tmp_path / "run")], capsys)
    assert "seed=-1" in err and "0..4294967295" in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_search_refuses_a_string_t_range(tmp_path, capsys):
    from flexsnn.models.checkpoint import CheckpointMeta, save_checkpoint
    from flexsnn.models.zoo import build_model

    model = build_model("speck3c1fc")
    ck = save_checkpoint(tmp_path / "ck.safetensors", model,
                         CheckpointMeta(model_name="speck3c1fc", model_kwargs={},
                                        neuron_profile=model.neuron_profile, t_range="1-10"))
    err = _err(["search", "-c", str(ck), "--out", str(tmp_path / "s")], capsys)
    # refused when the sidecar is read, by file and field path, before any search runs
    assert "ck.json" in err and "meta.t_range" in err and "'1-10'" in err and "2 items" in err


def test_output_paths_are_checked_before_work(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    err = _err(["train", "--out", str(a_file)], capsys)
    assert f"--out='{a_file}'" in err and "a folder" in err
    err = _err(["eval", "-c", CK, "--out", str(a_file / "sub")], capsys)
    assert "--out=" in err and "is a regular file" in err
    err = _err(["calibrate-bn", "-c", CK, "--out", str(a_dir)], capsys)
    assert f"--out='{a_dir}'" in err and "existing folder" in err
    err = _err(["data", "show", "--out", str(a_dir)], capsys)
    assert "--out=" in err and "existing folder" in err
    err = _err(["data", "prepare", "--out", str(a_file / "x.json")], capsys)
    assert "regular file" in err
    err = _err(["export", "-c", CK, "--out", str(a_dir)], capsys)
    assert "--out=" in err and "existing folder" in err
    err = _err(["export", "-c", CK, "--out", str(tmp_path / "ok.chip"), "--onnx", str(a_file / "m.onnx")], capsys)
    assert "--onnx=" in err
    err = _err(["simulate", "--chip", "x.chip", "--out", str(a_file)], capsys)
    assert "--out=" in err
    err = _err(["hwtest", "--out", str(a_file)], capsys)
    assert "--out=" in err
    err = _err(["demo", "--out", str(a_file / "r")], capsys)
    assert "--out=" in err
    err = _err(["demo", "--results-json", str(a_dir)], capsys)
    assert "--results-json=" in err


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_output_path(ro / "x.json", "--out")
    finally:
        ro.chmod(0o755)


def test_library_checks():
    assert check_range("x", 3, lo=1, hi=5, integer=True) == 3
    for bad in (True, 2.0, "3", 0, 6):
        with pytest.raises(ConfigError) as info:
            check_range("x", bad, lo=1, hi=5, integer=True)
        assert info.value.field == "x" and info.value.value == bad
    with pytest.raises(ConfigError):
        check_range("lr", float("inf"), above=0)
    assert parse_json_object('{"T": 4}', "--m") == {"T": 4}
    from flexsnn.training.trainer import TrainConfig

    check_field_types(TrainConfig, {"limit": None, "lr": 1, "scheme": {"t_max": None}})
    with pytest.raises(ConfigError) as info:
        check_field_types(TrainConfig, {"augment": "no"})
    assert info.value.field == "augment" and "true/false" in str(info.value)
