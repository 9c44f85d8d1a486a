"""The calibration benchmark runs in smoke mode (needs the real recordings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("n_pairs", "mean_events_generated", "mean_events_real", "count_correlation",
            "spatial_correlation_median", "time_profile_correlation", "on_fraction_generated",
            "machine")


@pytest.mark.realdata
def test_smoke_run_writes_json_and_png(nmnist_small, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "saccade_fidelity.py"), "--smoke",
         "--out", str(tmp_path), "--real", str(nmnist_small)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "spatial corr" in out.stdout
    res = json.loads((tmp_path / "saccade_fidelity.json").read_text())
    assert all(k in res for k in REQUIRED)
    assert res["n_pairs"] == 20 and res["smoke"] is True
    assert (tmp_path / "saccade_fidelity.png").stat().st_size > 10_000
    # even on 20 pairs the calibrated generator is close to real recordings
    assert abs(res["mean_count_rel_err"]) < 0.3 and res["spatial_correlation_median"] > 0.7


def test_committed_results_meet_targets():
    path = REPO / "benchmarks" / "results" / "saccade_fidelity.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/saccade_fidelity.json not generated yet")
    res = json.loads(path.read_text())
    assert all(k in res for k in REQUIRED)
    assert res["n_pairs"] == 1000
    assert abs(res["mean_events_generated"] / res["mean_events_real"] - 1) <= 0.10
    assert res["spatial_correlation_median"] >= 0.85
    assert res["time_profile_correlation"] >= 0.85
