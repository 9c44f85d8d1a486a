"""The pixel-class hybrid study (``benchmarks/c2st_pixel_classes.py``): a hybrid takes exactly
the masked pixels from the generated recording, the classes split the pixels, and the script
runs in smoke mode against a compared renderer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.c2st_pixel_classes import CLASSES, class_masks, pixel_hybrid
from flexsnn.data.events import EVENT_DTYPE


def _events(xs, ys, ts, p=0) -> np.ndarray:
    ev = np.zeros(len(xs), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = xs, ys, ts, p
    return ev


def test_hybrid_takes_the_masked_pixels_from_the_generated_recording():
    real = _events([1, 2, 3, 1], [0, 0, 0, 0], [10, 20, 30, 40])
    gen = _events([1, 2, 5], [0, 0, 0], [15, 25, 35], p=1)
    mask = np.zeros((34, 34), bool)
    mask[0, 2] = mask[0, 5] = True  # pixels (x 2, y 0) and (x 5, y 0)
    out = pixel_hybrid(real, gen, mask)
    assert out["t"].tolist() == [10, 25, 30, 35, 40]
    assert out["p"].tolist() == [0, 1, 0, 1, 0]  # the masked pixels' events are the generated ones
    assert pixel_hybrid(real, gen, np.zeros((34, 34), bool)).tolist() == real.tolist()


def test_classes_split_the_pixels():
    expected = np.array([0.0, 0.29, 0.3, 1.9, 2.0, 5.9, 6.0, 100.0]).reshape(1, 1, 8)
    masks = class_masks(expected)
    parts = [m for name, m in masks.items() if name != "all"]
    np.testing.assert_array_equal(np.sum(parts, 0), 1)  # every pixel in exactly one class
    assert masks["busy (>= 6)"][0, 0].tolist() == [False] * 6 + [True] * 2
    assert masks["all"].all() and set(masks) == set(CLASSES)


@pytest.mark.realdata
def test_c2st_pixel_classes_smoke(nmnist_small, tmp_path):
    from benchmarks import c2st_pixel_classes
    from flexsnn.data.learned_dvs import DEFAULT_WEIGHTS

    c2st_pixel_classes.main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path),
                             "--compare", str(DEFAULT_WEIGHTS)])
    doc = json.loads((tmp_path / "c2st_pixel_classes_smoke.json").read_text())
    assert doc["smoke"] and set(doc["renderers"]) == {"studied", "compared"}
    for role in ("studied", "compared"):
        hybrids = doc["renderers"][role]["hybrids"]
        assert set(hybrids) == set(CLASSES)
        assert hybrids["all"]["share_of_pixels"] == 1.0 and hybrids["all"]["share_of_real_events"] == 1.0
        assert all(0.0 <= h["c2st"] <= 1.0 for h in hybrids.values())
    # the same renderer and seed on both sides: the same hybrids, the same verdicts
    assert doc["renderers"]["studied"]["hybrids"] == doc["renderers"]["compared"]["hybrids"]
