"""benchmarks/async_gap.py runs in smoke mode and writes the keys BENCHMARKS.md names (issue 15)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "async_gap.py"


def _load(script: Path = SCRIPT):
    """A benchmark script (default benchmarks/async_gap.py) as a module (scripts are not part of
    the package)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_smoke(tmp_path, nmnist_small, monkeypatch):
    monkeypatch.setenv("FLEXSNN_NMNIST_SMALL", str(nmnist_small))
    mod = _load()
    args = ["--smoke", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--seeds", "0,1"]
    assert mod.main(args + ["--arms", "sdt,mtt-floor-budget-qat,sdt-deep,mtt-budget19-base16"]) == 0
    assert mod.main(args + ["--arms", "mtt-budget19-chip-deep-th2", "--seeds", "0"]) == 0
    assert mod.main(args + ["--arms", "sdt-w16,mtt-budget35-w16-deep-th2", "--seeds", "0"]) == 0
    assert mod.main(args + ["--cost"]) == 0
    # the stored chip images on a second rendering of the same held-out images
    recheck = _load(SCRIPT.parent / "async_gap_recheck.py")
    assert recheck.main(["--smoke", "--work", str(tmp_path / "work"), "--arms", "sdt,sdt-deep", "--seeds", "0,1",
                         "--generator-seeds", "1,2", "--out", str(tmp_path), "--select-on", "1",
                         "--synops-limit", "1e12"]) == 0
    again = json.loads((tmp_path / "async_gap_recheck_smoke.json").read_text())
    assert again["selection"]["chosen"] == "sdt-deep" and set(again["selection"]["reported"]) == {"2"}
    assert again["generator_seeds"] == ["1", "2"] and again["n_per_rendering"] == 24
    one = again["renderings"]["1"]["sdt"]
    assert set(one["per_seed"]) == {"0", "1"} and 0 <= one["async"] <= 1
    both = [again["renderings"][g]["sdt-deep"]["async"] for g in ("1", "2")]
    assert again["pooled"]["sdt-deep"]["async"] == pytest.approx(sum(both) / 2)
    assert isinstance(again["pooled"]["sdt-deep"]["async_vs_sdt_time_binned_T10"], bool)
    data0 = recheck.test_set(0, limit=4)  # generator seed 0 renders async_gap's own test recordings
    from flexsnn.data.registry import load_event_dataset

    own = load_event_dataset("saccade-mnist", split="test", seed=0, limit=4)
    assert all((data0[i][0] == own[i][0]).all() and data0[i][1] == own[i][1] for i in range(4))
    with pytest.raises(Exception, match="--work"):
        recheck.main(["--smoke", "--work", str(tmp_path / "none"), "--arms", "sdt", "--seeds", "0"])
    doc = json.loads((tmp_path / "async_gap_smoke.json").read_text())
    assert doc["best_arm"] in doc["arms"] and "machine" in doc
    for arm in ("sdt", "mtt-floor-budget-qat"):
        e = doc["arms"][arm]
        assert e["seeds"] == [0, 1] and set(e["per_seed"]) == {"0", "1"}
        for key in ("float_T10", "async", "real_time_binned_T10", "real_async", "synops_per_sample",
                    "train_seconds"):
            assert e[key] is not None, key
        assert set(e["time_binned"]) == {"10", "30", "100"}
        assert e["synops_per_sample"] > 0 and 0 <= e["async"] <= 1
    # the floor reached the chip image: threshold_low is -4 x threshold_high (up to rounding)
    run = json.loads((tmp_path / "work" / "smoke" / "runs" / "mtt-floor-budget-qat-s0.json").read_text())
    assert all(abs(lo + 4 * hi) <= 2 for lo, hi in zip(run["threshold_low"], run["threshold_high"]))
    # a deploy-floor arm reuses the trained checkpoint of the arm without it; its image has floor -16
    deep = json.loads((tmp_path / "work" / "smoke" / "runs" / "sdt-deep-s0.json").read_text())
    assert all(abs(lo + 16 * hi) <= 8 for lo, hi in zip(deep["threshold_low"], deep["threshold_high"]))
    assert not (tmp_path / "work" / "smoke" / "sdt-deep-s0").exists()
    assert (tmp_path / "work" / "smoke" / "sdt-s0" / "sdt-deep.chip").is_file()
    assert doc["arms"]["sdt-deep"]["parts"]["deploy_floor"] == -16.0
    # a base_floor arm fine-tunes a base of its own, trained at that floor
    base16 = json.loads((tmp_path / "work" / "smoke" / "base-floor16" / "config.json").read_text())
    assert base16["config"]["model_kwargs"]["neuron"]["min_v_mem"] == -16.0
    run16 = json.loads((tmp_path / "work" / "smoke" / "runs" / "mtt-budget19-base16-s0.json").read_text())
    assert run16["config"]["init_checkpoint"].endswith("base-floor16/final.safetensors")
    # the chip's configuration in every step: its own run (smoke: chip_T 9), floor -16, rate_M
    chip = json.loads((tmp_path / "work" / "smoke" / "runs" / "mtt-budget19-chip-deep-th2-s0.json").read_text())
    assert (chip["config"]["chip_T"], chip["config"]["chip_floor"], chip["config"]["chip_backprop"]) == (9, -16.0, "rate_M")
    rows = (tmp_path / "work" / "smoke" / "mtt-budget19-chip-deep-th2-s0" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["chip_synops_per_sample"] > 0
    assert chip["threshold_high"][0] > 0 and doc["arms"]["mtt-budget19-chip-deep-th2"]["async"] is not None
    # a base_width arm fine-tunes a base of its own at that width, and is set beside SDT of its width
    base_w16 = json.loads((tmp_path / "work" / "smoke" / "base-w16" / "config.json").read_text())
    assert base_w16["config"]["model_kwargs"]["width"] == 16
    w16 = json.loads((tmp_path / "work" / "smoke" / "runs" / "mtt-budget35-w16-deep-th2-s0.json").read_text())
    assert w16["config"]["init_checkpoint"].endswith("base-w16/final.safetensors")
    assert w16["config"]["synops_budget"] == 3.5e6
    e16 = doc["arms"]["mtt-budget35-w16-deep-th2"]
    assert e16["width"] == 16 and doc["arms"]["sdt"]["width"] == 8
    assert e16["sdt_same_width_time_binned_T10"] == doc["arms"]["sdt-w16"]["time_binned"]["10"]
    assert e16["async_minus_sdt_same_width_T10"] == pytest.approx(e16["async"] - e16["sdt_same_width_time_binned_T10"])
    assert set(doc["fine_T_cost"]["seconds_per_step"]) == {"mtt_T10_bptt", "fine_bptt", "fine_rate_M", "fine_rate_S"}
    assert (tmp_path / "async_gap_smoke.png").is_file()
    # deployment-only sweep on the trained checkpoints: floor -1 re-exports the sdt arm's image
    assert mod.main(args + ["--deploy-sweep", "sdt", "--seeds", "0"]) == 0
    sweep = json.loads((tmp_path / "async_gap_deploy.json").read_text())["per_seed"]["0"]
    assert sweep["floor"]["-1.0"]["async"] == pytest.approx(doc["arms"]["sdt"]["per_seed"]["0"]["async"])
    assert sweep["floor"]["-16.0"]["async"] == pytest.approx(doc["arms"]["sdt-deep"]["per_seed"]["0"]["async"])
    assert len(sweep["threshold"]) == 4 * len(mod.SWEEP_MULTS)
    assert set(sweep["time_binned"]) == {str(T) for T in mod.SWEEP_T}
    assert sweep["real"]["floor-16"]["async"] == pytest.approx(doc["arms"]["sdt-deep"]["per_seed"]["0"]["real_async"])
    assert sweep["real"]["core0x2"]["synops_per_sample"] < sweep["real"]["floor-16"]["synops_per_sample"]
    # one core's floor at a time (the others at -16); the best one also on the real recordings
    assert len(sweep["core_floor"]) == 4 * len(mod.SWEEP_CORE_FLOORS)
    best = max(sweep["core_floor"], key=lambda k: sweep["core_floor"][k]["async"])
    assert best in sweep["real"]


def test_deploy_only_arms_reuse_the_trained_checkpoint():
    mod = _load()
    assert mod.training_arm("mtt-budget19-deep-th2") == "mtt-budget19-deep"
    assert mod.training_arm("mtt-deep") == "mtt" and mod.training_arm("sdt") == "sdt"
    assert mod.training_arm("mtt-budget19-chip-deep-th2") == "mtt-budget19-chip-deep-th2"  # trained anew


def test_stored_configs_from_before_new_settings_are_the_same_config():
    """A run stored before a TrainConfig/SchemeConfig setting existed is reused (new settings take
    their defaults); a run with another value is not."""
    mod = _load()
    from flexsnn.training.recipes import chip_finetune_config

    cfg = chip_finetune_config("base.safetensors", floor=-4.0)
    old = json.loads(json.dumps(cfg.to_dict()))
    for key in ("deploy_min_v_mem", "distill_checkpoint", "distill_weight", "distill_temperature",
                "chip_T", "chip_floor", "chip_weight", "chip_backprop"):
        del old[key]
    del old["scheme"]["include_max"]
    assert mod.same_config(old, cfg)
    assert not mod.same_config({**old, "epochs": 7}, cfg)
    assert not mod.same_config({**old, "no_such_setting": 1}, cfg) and not mod.same_config(None, cfg)


@pytest.mark.slow
def test_prepare_trains_only_the_bases_the_arms_need(tmp_path, nmnist_small, monkeypatch):
    monkeypatch.setenv("FLEXSNN_NMNIST_SMALL", str(nmnist_small))
    mod = _load()
    work = tmp_path / "work"
    args = ["--smoke", "--out", str(tmp_path), "--work", str(work), "--prepare"]
    assert mod.main(args + ["--arms", "mtt-budget25-w16c128-kd-th2,mtt-budget14-w16c128-kd"]) == 0
    made = sorted(p.name for p in (work / "smoke").iterdir() if p.is_dir())
    assert made == ["base-w16-32-128", "runs"]  # one base for both arms, no default base, no run
    cfg = json.loads((work / "smoke" / "base-w16-32-128" / "config.json").read_text())["config"]
    assert cfg["model_kwargs"]["channels"] == [16, 32, 128] and cfg["device"] == "cpu"
    assert (work / "smoke" / "base-w16-32-128" / "final.safetensors").is_file()
    # the arms then reuse it: a distilled arm's teacher is that base
    assert mod.main(["--smoke", "--out", str(tmp_path), "--work", str(work), "--seeds", "0",
                     "--arms", "mtt-budget25-w16c128-kd-th2"]) == 0
    run = json.loads((work / "smoke" / "runs" / "mtt-budget25-w16c128-kd-th2-s0.json").read_text())
    assert run["config"]["distill_checkpoint"].endswith("base-w16-32-128/final.safetensors")
    assert run["threshold_high"][0] > 0 and run["async"] is not None


def test_recheck_selection_chooses_on_validation_and_reports_elsewhere():
    recheck = _load(SCRIPT.parent / "async_gap_recheck.py")

    def arm(t10, asy, synops):
        return {"time_binned_T10": t10, "async": asy, "synops_per_sample": synops}

    renderings = {"1": {"sdt": arm(0.96, 0.88, 4e6), "a": arm(0.93, 0.95, 1.8e6), "b": arm(0.94, 0.97, 2.5e6),
                        "c": arm(0.92, 0.94, 1.5e6)},
                  "2": {"sdt": arm(0.965, 0.88, 4e6), "a": arm(0.93, 0.96, 1.8e6), "b": arm(0.94, 0.97, 2.5e6),
                        "c": arm(0.92, 0.97, 1.5e6)}}
    sel = recheck.select(renderings, "1", 2.0e6)
    assert sel["chosen"] == "a"  # b is more accurate but over the limit; c wins only on rendering 2
    r = sel["reported"]["2"]
    assert r["async_minus_sdt_T10_pt"] == pytest.approx(-0.5)
    assert r["async_vs_sdt_time_binned_T10"] is False and r["async_vs_own_time_binned_T10"] is True
    with pytest.raises(Exception, match="--select-on"):
        recheck.select(renderings, "3", 2.0e6)
    with pytest.raises(Exception, match="--synops-limit"):
        recheck.select(renderings, "1", 1.0e6)
