"""Evaluation at any T / configuration, firing rates, table and plot; benchmark smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.models.zoo import build_model
from flexsnn.training.evaluate import (
    FrameCache, accuracy, accuracy_per_config, accuracy_per_T, firing_rates, format_table,
    plot_accuracy_curves, predict,
)

REPO = Path(__file__).resolve().parents[1]


def test_predict_is_argmax_of_time_sum():
    logits = torch.tensor([[[5.0, 0.0]], [[0.0, 3.0]], [[0.0, 3.0]]])   # [T=3, B=1, K=2]
    assert predict(logits).tolist() == [1]            # sum 5 vs 6, although step 0 says class 0
    with pytest.raises(ConfigError):
        predict(torch.zeros(2, 3))


@pytest.fixture(scope="module")
def tiny_test():
    from flexsnn.data.registry import load_event_dataset

    return load_event_dataset("saccade-mnist", split="test", limit=12, seed=0)


def test_accuracy_per_T_and_config(tiny_test):
    torch.manual_seed(0)
    model = build_model("speck3c1fc")
    cache = FrameCache(tiny_test)
    accs = accuracy_per_T(model, cache, [1, 2, 5], batch_size=8)
    assert set(accs) == {1, 2, 5} and all(0.0 <= a <= 1.0 for a in accs.values())
    assert model.temporal_config == (5, 5, 5, 5)
    # uniform config tuple == uniform T, on the same frames
    assert accuracy_per_config(model, cache, [(2, 2, 2, 2)], batch_size=8)[0] == accs[2]
    # an explicit loop over the batches agrees
    loader = cache.loader(5, 8)
    correct = 0
    with torch.no_grad():
        model.set_uniform(5)
        for x, y in loader:
            correct += int((model(x.transpose(0, 1)).sum(0).argmax(-1) == y).sum())
    assert accs[5] == correct / len(tiny_test)
    assert accuracy(model, cache.loader(2, 8), config=(2, 1, 1, 1)) >= 0.0
    rates = firing_rates(model, cache, 5, batch_size=8, n_batches=1)
    assert len(rates) == 4 and all(r >= 0 for r in rates)


def test_t_protocols_prefix_keeps_first_frames_rebin_bins_all(tiny_test):
    from flexsnn.data.frames import events_to_frames

    prefix = FrameCache(tiny_test, protocol="prefix", data_T=6)
    rebin = FrameCache(tiny_test)
    ev, label = tiny_test[3]
    full = torch.from_numpy(events_to_frames(ev, tiny_test.sensor, 6))
    x, y = prefix.get(2)[3]
    assert int(y) == label and torch.equal(x, full[:2])          # the first 2 of the 6 frames
    assert x.sum() < full.sum()                                    # later events are not seen
    xr, _ = rebin.get(2)[3]
    assert xr.shape == x.shape and xr.sum() >= full.sum() - 1      # rebin: (almost) every event, 2 bins
    xb, yb = next(iter(prefix.loader(2, 5)))
    assert xb.shape[:2] == (5, 2) and torch.equal(xb[3], x)
    with pytest.raises(ConfigError, match="prefix"):
        prefix.get(7)
    with pytest.raises(ConfigError, match="t_protocol"):
        FrameCache(tiny_test, protocol="first")
    with pytest.raises(ConfigError, match="data_T"):
        FrameCache(tiny_test, protocol="prefix")


def test_table_and_plot(tmp_path):
    curves = {"sdt": {1: 0.5, 2: 0.75}, "mtt": {1: 0.625, 2: 0.8}}
    table = format_table(curves)
    assert "62.50%" in table and table.splitlines()[0].split() == ["T", "sdt", "mtt"]
    png = plot_accuracy_curves(curves, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mtt_vs_sdt.py"), "--smoke", "--no-nmnist",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "mtt_vs_sdt_smoke.json").read_text())
    for key in ("dataset", "T_eval", "accuracy", "epoch_seconds", "cost_ratio_mtt_over_sdt", "machine"):
        assert key in doc
    assert len(doc["accuracy"]["sdt"]) == len(doc["T_eval"]) == len(doc["accuracy"]["mtt"])
    assert set(doc["epoch_seconds"]) == {"sdt", "mtt"} and doc["cost_ratio_mtt_over_sdt"] > 0
    assert (out / "mtt_vs_sdt_smoke.png").is_file()
