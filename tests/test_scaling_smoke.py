"""benchmarks/scaling.py runs in smoke mode (1 and 2 gloo processes) and writes the keys
BENCHMARKS.md names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


@pytest.mark.slow
def test_smoke(tmp_path, nmnist_small):
    spec = importlib.util.spec_from_file_location("scaling_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--data", str(nmnist_small), "--out", str(tmp_path), "--timeout", "300"]) == 0
    doc = json.loads((tmp_path / "scaling.json").read_text())
    for key in ("train_samples_per_s", "eval_samples_per_s"):
        assert set(doc[key]) == {"1", "2"} and all(v > 0 for v in doc[key].values())
    assert doc["eval"]["identical_results_1_and_2"] and doc["smoke"]
    assert {"cores", "cpu", "torch"} <= set(doc["machine"]) and len(doc["loadavg_before"]) == 3
