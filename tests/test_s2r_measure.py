"""The sim-to-real measurements recover generator settings from recordings made with known
settings (generated recordings stand in for the real ones), and the C2ST-attempts benchmark
runs in smoke mode and its committed results carry their keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks._s2r_measure import (
    measure_end,
    measure_gain,
    measure_noise,
    measure_noise_map,
    measure_threshold_map,
    measure_timing,
    paired_diagnosis,
    pixel_count_hist,
)
from flexsnn.data.saccade import SaccadeGenerator, SaccadeParams, load_mnist_images

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(noise_hz=0.0, hot_pixels=(), jitter_us=0.0, latency_tail_us=0.0)


def _recs(n=12, **kw):
    images, _ = load_mnist_images()
    gen = SaccadeGenerator(SaccadeParams(**kw))
    return [gen.generate(images[i * 37], i * 37) for i in range(n)]


def test_noise_polarity_and_end_are_recovered():
    blank = np.zeros((28, 28))
    gen = SaccadeGenerator(SaccadeParams(noise_hz=3.0, hot_pixels=(), on_ratio_noise=0.2,
                                         invert_polarity=False, end_us=300_000.0, end_jitter_us=2000.0))
    recs = [gen.generate(blank, i) for i in range(20)]
    assert abs(measure_noise(recs) - 0.2) < 0.05
    end = measure_end(recs)
    assert abs(end["end_us"] - 300_000.0) < 1500 and 800 < end["end_jitter_us"] < 4000


def test_noise_map_is_recovered():
    truth = np.ones((34, 34))
    truth[:, 28:] = 3.0                     # a noisy band at the right edge, away from the digit
    recs = _recs(n=24, **{**QUIET, "noise_hz": 0.5, "noise_map": tuple(truth.ravel() / truth.mean())})
    m = measure_noise_map(recs, min_samples=8).reshape(34, 34)
    assert abs(m.mean() - 1.0) < 1e-9
    assert 2.0 < m[:, 28:].mean() / m[:, :6].mean() < 4.5


def test_timing_gain_and_threshold_map_are_recovered():
    base = _recs(**QUIET)
    knots = measure_timing(base, base)["time_warp_knots_us"]
    shift = (0.0,) + (3000.0,) * (len(knots) - 2) + (0.0,)
    late = _recs(**QUIET, time_warp_knots_us=knots, time_warp_sigma_us=(0.0,) * len(knots),
                 time_warp_shift_us=shift)
    t = measure_timing(late, base)
    inner = np.asarray(t["time_warp_shift_us"][1:-1])
    assert np.all(np.abs(inner - 3000.0) < 1200), inner
    assert abs(measure_gain(_recs(**QUIET, gain_sigma=0.25, ), base) - 0.25) < 0.12
    assert measure_gain(base, base) == 0.0
    truth = np.ones((34, 34))
    truth[10:24:2, 10:24:2] = 1.4          # a pattern of insensitive pixels on the digit
    real = _recs(**QUIET, threshold_sigma=0.0, threshold_map=tuple(truth.ravel()))
    m = measure_threshold_map(real, lambda tm: _recs(**QUIET, threshold_sigma=0.0, threshold_map=tm))
    m = m.reshape(34, 34)
    assert m[10:24:2, 10:24:2].mean() > 1.15 * m[11:24:2, 11:24:2].mean()


def test_paired_diagnosis_sees_a_noise_polarity_change():
    a = _recs(n=16, on_ratio_noise=0.5)
    b = _recs(n=16, on_ratio_noise=0.02)
    held_out = np.arange(16) % 2 == 1
    d = paired_diagnosis(b, a, held_out)
    assert d["isolated_pixels_p1_share"][0] > d["isolated_pixels_p1_share"][1] + 0.2
    assert set(d["logreg_c2st"]) >= {"count_image_log1p", "pixel_count_hist_per_polarity",
                                     "time_profile_log1p", "on_share_per_bin"}
    same = paired_diagnosis(a, a, held_out)
    assert same["pixel_count_hist_l1"] == 0.0
    h = pixel_count_hist(np.ones((1, 2, 34, 34)))
    assert h.shape == (1, 2, 16) and h[0, 0, 0] == 34 * 34


@pytest.mark.realdata
@pytest.mark.slow
def test_c2st_attempts_smoke(nmnist_small, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "c2st_attempts.py"), "--smoke", "--out", str(tmp_path),
         "--real", str(nmnist_small)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "c2st_attempts.json").read_text())
    assert res["attempts"][0]["name"].startswith("v4") and len(res["attempts"]) == 8
    assert all(0.0 <= a["c2st_accuracy"] <= 1.0 for a in res["attempts"])
    assert len(res["threshold_map"]) == 34 * 34 and len(res["noise_map"]) == 34 * 34


def test_committed_c2st_attempts_have_their_keys():
    path = REPO / "benchmarks" / "results" / "c2st_attempts.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/c2st_attempts.json not committed yet")
    res = json.loads(path.read_text())
    assert {"diagnosis_v4", "measured", "attempts", "final_params", "machine"} <= set(res)
    assert not res["smoke"] and res["n_pairs"] == 1000
    for a in res["attempts"]:
        assert {"c2st_accuracy", "c2st_views", "params"} <= set(a)


def test_committed_c2st_controls_have_their_keys():
    path = REPO / "benchmarks" / "results" / "c2st_controls.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/c2st_controls.json not committed yet")
    res = json.loads(path.read_text())
    assert not res["smoke"] and len(res["controls"]) == 2
    for row in res["controls"].values():
        assert 0.0 <= row["c2st_accuracy"] <= 1.0 and 0.0 <= row["count_image"] <= 1.0


def test_c2st_saliency_sums_to_one_and_finds_a_planted_difference():
    """The saliency of a C2ST whose two sets differ only in one pixel of the first T=10 frame
    puts the largest share on that pixel and on a T=10 frame-0 channel."""
    from benchmarks._s2r_c2st import c2st_saliency, channel_names
    from flexsnn.data.events import EVENT_DTYPE

    rng = np.random.default_rng(0)

    def rec(planted: bool) -> np.ndarray:
        n = 300
        ev = np.zeros(n + (12 if planted else 0), dtype=EVENT_DTYPE)
        ev["x"][:n], ev["y"][:n] = rng.integers(0, 34, n), rng.integers(0, 34, n)
        ev["p"][:n], ev["t"][:n] = rng.integers(0, 2, n), rng.integers(0, 300_000, n)
        if planted:  # a burst at pixel (x 5, y 7), polarity 1, in the first 20 ms
            ev["x"][n:], ev["y"][n:], ev["p"][n:] = 5, 7, 1
            ev["t"][n:] = rng.integers(0, 20_000, 12)
        ev["t"][0], ev["t"][-1] = 0, 300_000
        return np.sort(ev, order="t")

    real = [rec(True) for _ in range(60)]
    gen = [rec(False) for _ in range(60)]
    sal = c2st_saliency(real[:40], gen[:40], real[40:], gen[40:], seed=0, epochs=15)
    assert sal["per_channel"].sum() == pytest.approx(1.0) and sal["per_pixel"].sum() == pytest.approx(1.0)
    assert np.unravel_index(sal["per_pixel"].argmax(), (34, 34)) == (7, 5)
    top = channel_names()[int(sal["per_channel"].argmax())]
    assert top.endswith("frame 0 p1"), top


def test_c2st_saliency_script_smoke(nmnist_small, tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "c2st_saliency.py"
    spec = importlib.util.spec_from_file_location("c2st_saliency", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_saliency_smoke.json").read_text())
    assert doc["n_held_out"] == res["n_held_out"] == 100 and len(doc["per_channel"]) == 36
    assert sum(doc["per_T"].values()) == pytest.approx(1.0) and np.asarray(doc["per_pixel"]).shape == (34, 34)
    assert (tmp_path / "c2st_saliency_smoke.png").stat().st_size > 1000
