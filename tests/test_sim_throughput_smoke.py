"""benchmarks/sim_throughput.py runs in smoke mode and writes the keys BENCHMARKS.md names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sim_throughput.py"


@pytest.mark.slow
def test_smoke(tmp_path, nmnist_small):
    spec = importlib.util.spec_from_file_location("sim_throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--data", str(nmnist_small), "--out", str(tmp_path),
                     "--chip", str(_small_chip(tmp_path))]) == 0
    doc = json.loads((tmp_path / "sim_throughput.json").read_text())
    for key in ("samples", "samples_per_s_1core", "samples_per_s_all_cores", "events_per_s",
                "synops_per_s", "time_binned_samples_per_s", "speedup_vs_time_binned_T100", "machine"):
        assert key in doc
    assert set(doc["time_binned_samples_per_s"]) == {"T10", "T100"}
    assert doc["samples"] == 8 and doc["synops_per_s"] > 0 and len(doc["loadavg_before"]) == 3
    assert set(doc["trained_chip"]) >= {"synops_per_sample", "synops_per_s_per_core", "samples_per_s_1",
                                        "samples_per_s_2", "time_binned_T100_samples_per_s", "load_average"}
    assert doc["trained_chip"]["synops_per_s_per_core"] > 0 and doc["idle_wait"]["waited_s"] >= 0


def _small_chip(tmp_path):
    from chip_builders import nmnist_image

    return nmnist_image(2).save(tmp_path / "small.chip")
