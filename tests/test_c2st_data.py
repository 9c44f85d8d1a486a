"""The learning-curve study (``benchmarks/c2st_data.py``): the epoch scaling keeps the rate CNN's
steps, and the script refits on fewer pairs and measures each fit in smoke mode."""

from __future__ import annotations

import json

from benchmarks.c2st_data import BASE_EPOCHS, BASE_PAIRS, scaled_epochs


def test_fewer_pairs_get_proportionally_more_epochs():
    assert scaled_epochs(BASE_PAIRS) == BASE_EPOCHS
    assert scaled_epochs(250) == 402 and scaled_epochs(125) == 805
    assert scaled_epochs(10**6) == 1


def test_data_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_data import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "c2st_data_smoke.json").read_text())
    assert [p["fit_pairs"] for p in saved["points"]][1:] == [30, 60] and res["smoke"] is True
    assert saved["points"][0]["model"] == "shipped"
    for p in saved["points"]:
        assert len(p["c2st_per_draw"]) == 2 and 0.0 <= p["c2st"] <= 1.0
        assert p["nll_held_out_per_cell"] > 0.0
    # a model fitted on 30 pairs for 2 epochs fits the held-out half far worse than the shipped one
    assert saved["points"][1]["nll_held_out_per_cell"] > saved["points"][0]["nll_held_out_per_cell"]
