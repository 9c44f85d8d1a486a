"""The sim-to-real benchmark runs in smoke mode (needs the real recordings), and its committed
results carry the keys the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("generated_test_accuracy", "real_accuracy", "real_n", "transfer_gap_pt", "c2st_accuracy",
            "seeds", "per_seed", "generator_params", "baseline", "arms", "diagnostics", "machine")


@pytest.mark.realdata
@pytest.mark.slow
def test_smoke_run_writes_json_and_png(nmnist_small, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "sim_to_real.py"), "--smoke", "--out", str(tmp_path),
         "--real", str(nmnist_small), "--seeds", "0,1", "--arms", "previous,fitted-v3+event_augment,fitted-c64"],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "C2ST" in out.stdout
    res = json.loads((tmp_path / "sim_to_real.json").read_text())
    assert all(k in res for k in REQUIRED)
    assert res["real_n"] == 20 and res["seeds"] == [0, 1] and len(res["per_seed"]) == 2
    assert set(res["arms"]) == {"previous", "fitted-v3+event_augment", "fitted-c64"}
    # an arm may change the model: fitted-c64 trains speck3c1fc with 16/32/64 channels
    assert res["arms"]["fitted-c64"]["model_kwargs"] == {"channels": [16, 32, 64]}
    assert res["arms"]["previous"]["model_kwargs"] == {}
    assert res["headline_arm"] == "previous"  # the headline arm (learned) did not run: the first did
    assert "channels 16/32/64 instead of 8/16/16 (the model, not the data)" not in res["gap_moved_by_pt"]  # no fitted arm
    assert set(res["arms"]["previous"]["c2st_views"]) >= {"event_count", "count_image", "time_profile_T30"}
    for arm in res["arms"].values():
        assert 0.0 <= arm["c2st_accuracy"] <= 1.0
        assert len(arm["per_seed"]) == 2
    # the held-out real recordings show images that were not generated for training
    assert res["diagnostics"]["real"]["mean_events"] > 1000
    assert (tmp_path / "sim_to_real.png").stat().st_size > 20_000


def test_committed_results_have_the_issue_keys():
    path = REPO / "benchmarks" / "results" / "sim_to_real.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/sim_to_real.json not generated yet")
    res = json.loads(path.read_text())
    assert all(k in res for k in REQUIRED)
    assert res["real_n"] >= 200 and len(res["seeds"]) >= 2
    assert res["baseline"]["transfer_gap_pt"]["mean"] > res["transfer_gap_pt"]


def test_held_out_images_are_not_in_training(nmnist_small):
    sys.path.insert(0, str(REPO))
    from benchmarks._s2r_data import Pairs, training_images

    pairs = Pairs(nmnist_small, limit_per_class=10)
    ho = pairs.image_index[pairs.half(held_out=True)]
    train = training_images(ho, 4000)
    assert train.size == 4000 and not set(train) & set(ho)
    assert set(pairs.ranks[pairs.half(held_out=True)] % 2) == {1}


@pytest.mark.realdata
def test_speed_profile_is_measured_from_the_real_recordings(nmnist_small):
    """The measured speed profile peaks inside the three saccades, is near zero at the pauses
    it splits the windows at, and drives the generator (velocity="measured")."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from benchmarks._s2r_data import Pairs
    from benchmarks.fit_saccade import measure_speed_profile
    from flexsnn.data.saccade import SaccadeParams, saccade_path

    pairs = Pairs(nmnist_small, limit_per_class=10)
    m = measure_speed_profile([pairs.real[i] for i in pairs.half(held_out=False)])
    speed = np.asarray(m["speed_profile"])
    (a0, b1), (_b1, b2), (_b2, end) = m["motion_windows_us"]
    assert a0 == 0.0 and 80e3 <= b1 <= 115e3 and 200e3 <= b2 <= 225e3 and speed.max() == 1.0
    dt = m["speed_profile_dt_us"]
    for lo, hi in ((0, b1), (b1, b2), (b2, end)):
        assert speed[int(lo // dt):int(hi // dt)].max() > 0.5          # a saccade in every window
    assert speed[int(b1 // dt)] < 0.15 and speed[int(b2 // dt)] < 0.15  # split at a pause
    p = SaccadeParams(velocity="measured", **m)
    corners = np.asarray(p.path_px)
    dx, dy = saccade_path(p, np.array([b1, b2]))
    np.testing.assert_allclose(np.c_[dx, dy], corners[1:3], atol=1e-9)


@pytest.mark.realdata
def test_single_statistic_c2st_sees_only_its_statistic(nmnist_small):
    """Recordings thinned to half their events are told apart by the event count, recordings
    shifted 20 ms later by the first/last event times; neither by the statistic that did not change."""
    sys.path.insert(0, str(REPO))
    from benchmarks._s2r_c2st import C2ST_VIEWS, _held_out_accuracy
    from benchmarks._s2r_data import Pairs

    recs = Pairs(nmnist_small, limit_per_class=12).real
    a, b = recs[0::2], recs[1::2]                         # two disjoint real sets, 60 each
    thinned = [r[::2] for r in b]
    late = [r.copy() for r in b]
    for r in late:
        r["t"] += 20_000
    kw = dict(seed=0, epochs=30, batch_size=16)

    def acc(view, other):
        return _held_out_accuracy(C2ST_VIEWS[view], a[:30], other[:30], a[30:], other[30:], **kw)

    assert acc("event_count", thinned) > 0.9 and acc("event_count", late) < 0.7
    assert acc("first_last_event_ms", late) > 0.9 and acc("first_last_event_ms", thinned) < 0.75


def _result(arms: dict, headline: str, real_n: int = 497) -> dict:
    return {"arms": arms, "headline_arm": headline, "real_n": real_n, "generated_n": real_n,
            "diagnostics": {"from": headline}, "machine": {"date": "2026-11-30"}, "git_hash": "abc",
            "generator_version": 4, "seconds": 1.0}


def _arm(gap: float, params: dict, seeds=(0, 1)) -> dict:
    stat = lambda v: {"mean": v, "std": 0.0, "per_seed": [v] * len(seeds)}  # noqa: E731
    return {"params": params, "generated_test_accuracy": stat(0.96), "real_accuracy": stat(0.96 - gap / 100),
            "transfer_gap_pt": stat(gap), "c2st_accuracy": 0.9, "paired_frame_correlation": {"10": 0.8},
            "per_seed": [{"seed": s, "generated_test_accuracy": 0.96, "real_accuracy": 0.96 - gap / 100,
                          "transfer_gap_pt": gap, "generated_by_T": {}, "real_by_T": {}} for s in seeds]}


def test_merge_recomputes_the_headline_from_the_learned_arm(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks.sim_to_real import merge
    from flexsnn.data.learned_dvs import weights_digest
    from flexsnn.data.saccade import GENERATOR_VERSION
    from flexsnn.errors import ConfigError

    learned = {"renderer": "learned", "weights_sha256_16": weights_digest()}
    a = tmp_path / "a.json"
    a.write_text(json.dumps(_result({"previous": _arm(8.0, {}), "fitted": _arm(2.0, {})}, "fitted")))
    b = tmp_path / "b.json"
    b.write_text(json.dumps(_result({"learned": _arm(0.5, learned, seeds=(0, 1, 2))}, "learned")))
    (tmp_path / "b.png").write_bytes(b"png")
    res = merge([a, b], tmp_path / "out")
    assert res["headline_arm"] == "learned" and res["transfer_gap_pt"] == 0.5 and res["seeds"] == [0, 1, 2]
    assert set(res["arms"]) == {"previous", "fitted", "learned"}
    assert res["gap_moved_by_pt"]["learned image-to-events model instead of the physical one"] == pytest.approx(-1.5)
    assert res["baseline"]["transfer_gap_pt"]["mean"] == 8.0 and res["diagnostics"] == {"from": "learned"}
    assert res["generator_version"] == GENERATOR_VERSION  # the learned arm used today's weights
    assert [m["file"] for m in res["merged_from"]] == ["a.json", "b.json"]
    assert (tmp_path / "out" / "sim_to_real.png").read_bytes() == b"png"
    assert json.loads((tmp_path / "out" / "sim_to_real.json").read_text())["transfer_gap_pt"] == 0.5
    # a rerun of the learned arm, merged after the earlier merged result, replaces it
    d = tmp_path / "d.json"
    d.write_text(json.dumps(_result({"learned": _arm(1.25, learned, seeds=(0, 1))}, "learned")))
    again = merge([tmp_path / "out" / "sim_to_real.json", d], tmp_path / "out4")
    assert again["transfer_gap_pt"] == 1.25 and again["seeds"] == [0, 1]
    # the merged file's own sources stay named, marked as coming through it
    assert [(m["file"], m.get("via")) for m in again["merged_from"]] == [
        ("a.json", "sim_to_real.json"), ("b.json", "sim_to_real.json"), ("d.json", None)]
    assert set(again["arms"]) == {"previous", "fitted", "learned"}
    with pytest.raises(ConfigError, match="headline"):
        merge([a], tmp_path / "out2")
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_result({"learned": _arm(0.5, learned)}, "learned", real_n=20)))
    with pytest.raises(ConfigError, match="real_n"):
        merge([a, c], tmp_path / "out3")


@pytest.mark.realdata
def test_c2st_is_the_mean_over_classifier_seeds_cached_per_seed(nmnist_small, tmp_path):
    """``--c2st-seeds``: one C2ST per classifier seed, their mean as the verdict, each seed's
    result cached in the work folder (a second call trains nothing and agrees)."""
    from benchmarks._s2r_data import Pairs
    from benchmarks.sim_to_real import generator_checks

    pairs = Pairs(nmnist_small, limit_per_class=4)
    params = {"renderer": "learned"}
    a = generator_checks(params, pairs, c2st_epochs=2, seeds=(0, 1), work=tmp_path)
    assert len(a["c2st_per_seed"]) == 2
    assert a["c2st_accuracy"] == pytest.approx(sum(a["c2st_per_seed"]) / 2)
    assert len(list(tmp_path.glob("c2st-*-s0-e2.json"))) == 1 and len(list(tmp_path.glob("c2st-*-s1-e2.json"))) == 1
    b = generator_checks(params, pairs, c2st_epochs=2, seeds=(0, 1), work=tmp_path)
    assert b["c2st_per_seed"] == a["c2st_per_seed"]
