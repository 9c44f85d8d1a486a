"""The donor and sampler study (``benchmarks/c2st_pixels.py``): donors are the nearest other
recording at the named pixel, hybrids move exactly the busy pixels' events, and the script runs
in smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.c2st_pixels import (SAMPLER_ARMS, SIZE, block_donors, donor_hybrids, nearest_donors,
                                    shifted_pixels)
from flexsnn.data.events import EVENT_DTYPE


def _events(xs, ys, ts, p=0) -> np.ndarray:
    ev = np.zeros(len(xs), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = xs, ys, ts, p
    return ev


def test_nearest_donor_is_the_closest_other_recording_at_the_named_pixel():
    n, P = 4, SIZE * SIZE
    profiles = np.zeros((n, 2, P))
    profiles[:, 0, 5] = [0.0, 1.0, 0.2, 5.0]  # pixel 5: recording 0 is nearest to 2, 1 to 2, 2 to 0
    profiles[:, 0, 7] = [3.0, 9.0, 9.0, 3.1]  # pixel 7 (used as pixel 5's donor pixel below)
    busy = np.zeros((n, P), bool)
    busy[:, 5] = True
    same = nearest_donors(profiles, busy, np.arange(P))
    assert same[:, 5].tolist() == [2, 2, 0, 1] and (same[:, 6] == -1).all()
    moved = np.arange(P)
    moved[5] = 7  # compare recipient's pixel-5 profile with donors' pixel-7 profiles
    far = nearest_donors(profiles, busy, moved)
    assert far[0, 5] == 3 and far[3, 5] == 0  # never the recording itself
    blocks = block_donors(profiles, busy)
    assert blocks[:, 5].tolist() == [2, 2, 0, 1] and (blocks[~busy] == -1).all()


def test_shifted_pixels_move_by_exactly_k():
    for k in (1, 2):
        moved = shifted_pixels(k, seed=0)
        y, x = np.divmod(np.arange(SIZE * SIZE), SIZE)
        my, mx = np.divmod(moved, SIZE)
        assert (np.maximum(abs(my - y), abs(mx - x)) == k).all()


def test_hybrid_moves_exactly_the_busy_pixels_events_and_scales_their_times():
    real = [_events([1, 2, 1], [0, 0, 0], [100, 200, 400]), _events([1, 3, 1], [0, 0, 0], [50, 60, 800], p=1)]
    busy = np.zeros((2, SIZE * SIZE), bool)
    busy[0, 1] = True  # recording 0, pixel (x 1, y 0) takes recording 1's events there
    donor = np.full(busy.shape, -1)
    donor[0, 1] = 1
    out = donor_hybrids(real, busy, donor, np.arange(SIZE * SIZE))
    assert out[1].tolist() == real[1].tolist()
    at = out[0][out[0]["x"] == 1]
    assert at["p"].tolist() == [1, 1] and at["t"].tolist() == [25, 400]  # x 400/800
    assert out[0][out[0]["x"] == 2].tolist() == real[0][real[0]["x"] == 2].tolist()


@pytest.mark.realdata
def test_c2st_pixels_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_pixels

    c2st_pixels.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "c2st_pixels_smoke.json").read_text())
    assert doc["smoke"] and set(doc["donors"]) == {"same", "block2", "shift1", "shift2"}
    assert set(doc["sampler_arms"]) == set(SAMPLER_ARMS)
    apart = doc["sampler_arms"]["background apart, Poisson"]["sampler"]
    assert apart["noise_shape"] == 1.0
    assert doc["sampler_arms"]["background with the signal (regular, in the bursts)"]["sampler"]["noise_shape"] is None
    assert all(0.0 <= a["c2st"] <= 1.0 for part in ("donors", "sampler_arms") for a in doc[part].values())
