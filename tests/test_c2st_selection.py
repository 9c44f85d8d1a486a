"""The selection study (``benchmarks/c2st_selection.py``): importance resampling follows the
softmax of the discriminators' logits, and the script runs in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.c2st_selection import resample


def test_resampling_follows_the_softmax_of_the_logits():
    logits = np.log(np.array([[1.0, 1.0], [3.0, 1.0], [0.0 + 1e-300, 2.0]]))  # [K=3, N=2]
    rng = np.random.default_rng(0)
    picks = np.stack([resample(logits, rng) for _ in range(4000)])  # [4000, 2]
    share0 = np.bincount(picks[:, 0], minlength=3) / 4000
    share1 = np.bincount(picks[:, 1], minlength=3) / 4000
    assert share0 == pytest.approx([0.25, 0.75, 0.0], abs=0.03)
    assert share1 == pytest.approx([0.25, 0.25, 0.5], abs=0.03)
    # a low temperature concentrates on the most real candidate, a high one spreads evenly
    cold = resample(np.array([[0.0], [1.0]]), np.random.default_rng(1), temperature=0.01)
    assert cold.tolist() == [1]
    hot = np.stack([resample(np.array([[0.0], [1.0]]), rng, temperature=1e6) for _ in range(2000)])
    assert hot.mean() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="temperature"):
        resample(logits, rng, temperature=0.0)


def test_selection_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_selection import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_selection_smoke.json").read_text())
    assert set(saved["arms"]) == {"one draw", "importance resampling", "greedy (most real)"}
    assert res["smoke"] is True and saved["candidates"] == 2 and len(saved["discriminators"]) == 1
    assert all(0.0 <= arm["c2st"] <= 1.0 for arm in saved["arms"].values())
    assert 0.0 <= saved["discriminators"][0]["held_out_accuracy"] <= 1.0


def test_selection_study_refuses_zero_draws(tmp_path, nmnist_small, capsys):
    from benchmarks.c2st_selection import main

    with pytest.raises(SystemExit):
        main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path), "--candidates", "0"])
    assert "--candidates=0: give at least 1 draw per image" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
