"""The collage study's renderer (``benchmarks/_collage.py``): every pixel holds one real donor's events at
the same sensor pixel, an image's own recording is never used when excluded, the background
comes from donors whose image is background there, a seed fixes the output whatever the batch,
and bad input gets a clear error. On real N-MNIST recordings (skipped without them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexsnn.data.events import make_events
from flexsnn.errors import ConfigError, DataError

SIZE = 34


@pytest.fixture(scope="module")
def donors(nmnist_small):
    """Three real recordings per class and their MNIST images (the nmnist-small pairing)."""
    from benchmarks._s2r_data import Pairs
    from flexsnn.data.saccade import load_mnist_images

    pairs = Pairs(nmnist_small, limit_per_class=3)
    images = load_mnist_images()[0][pairs.image_index]
    return pairs.real, images, pairs.labels


@pytest.fixture(scope="module")
def renderer(donors):
    from benchmarks._collage import CollageRenderer

    real, images, _ = donors
    return CollageRenderer(real, images, nearest=5)


def _pixel_events(rec: np.ndarray, p: int) -> np.ndarray:
    y, x = divmod(p, SIZE)
    return rec[(rec["y"] == y) & (rec["x"] == x)]


def test_every_pixel_holds_its_donors_events(donors, renderer):
    real, images, _ = donors
    exclude = np.arange(4)
    dmap, duration = renderer.donor_map(images[:4], seed=0, exclude=exclude)
    recs = renderer.assemble(dmap, duration)
    for i, rec in enumerate(recs):
        assert np.all(np.diff(rec["t"]) >= 0)
        assert i not in dmap[i], "an excluded (own) recording was used"
        assert rec["t"].max() <= duration[i] + 1
        for p in np.flatnonzero(np.bincount(rec["y"].astype(int) * SIZE + rec["x"], minlength=SIZE * SIZE)):
            mine, theirs = _pixel_events(rec, p), _pixel_events(real[dmap[i, p]], p)
            assert len(mine) == len(theirs)
            np.testing.assert_array_equal(mine["p"], theirs["p"])
            scale = duration[i] / max(int(real[dmap[i, p]]["t"].max()), 1)
            np.testing.assert_allclose(mine["t"], np.round(theirs["t"] * scale), atol=1)
        # pixels with no events are those whose donor had none there
        total = sum(len(_pixel_events(real[dmap[i, p]], p)) for p in range(SIZE * SIZE))
        assert total == len(rec)


def test_an_image_takes_its_own_recording_unless_excluded(donors):
    from benchmarks._collage import CollageRenderer

    real, images, _ = donors
    one = CollageRenderer(real, images, nearest=1)
    dmap, _ = one.donor_map(images[:3], seed=0)
    for i in range(3):
        foreground = ~one.donor_background[i]
        assert np.all(dmap[i, foreground] == i)  # nearest by the whole map is its own image
    dmap, _ = one.donor_map(images[:3], seed=0, exclude=np.arange(3))
    assert all(i not in dmap[i] for i in range(3))


def test_background_comes_from_donors_that_are_background_there(donors):
    from benchmarks._collage import CollageRenderer

    real, images, _ = donors
    renderer = CollageRenderer(real, images, nearest=5, background_events=0.3)
    dmap, _ = renderer.donor_map(images[5:8], seed=3, exclude=np.arange(5, 8))
    rates = renderer.model.rates(images[5:8]).sum((1, 2)).reshape(3, -1)
    for i in range(3):
        bg = np.flatnonzero(rates[i] < renderer.background_events)
        assert renderer.donor_background[dmap[i, bg], bg].mean() > 0.99
        # one donor for most of the background: the level of a real recording, not a mix
        assert np.bincount(dmap[i, bg]).max() / bg.size > 0.5


def test_seed_fixes_the_output_whatever_the_batch(donors, renderer):
    """Without the background option the collage is a function of the image and the donors; with
    it, the seed picks each recording's background donor, the same whatever the batch."""
    from benchmarks._collage import CollageRenderer

    real, images, _ = donors
    a = renderer.render(images[:6], seed=7, batch=256)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, renderer.render(images[:6], seed=8, batch=2)))
    bg = CollageRenderer(real, images, nearest=5, background_events=0.3)
    a = bg.render(images[:6], seed=7, batch=256)
    b = bg.render(images[:6], seed=7, batch=2)
    c = bg.render(images[:6], seed=8, batch=256)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert any(x.tobytes() != y.tobytes() for x, y in zip(a, c))


def test_bad_input_is_refused_with_the_field_named(donors):
    from benchmarks._collage import CollageRenderer

    real, images, _ = donors
    with pytest.raises(ConfigError, match="nearest"):
        CollageRenderer(real, images, nearest=len(real))
    with pytest.raises(ConfigError, match="donor_images"):
        CollageRenderer(real, images[:-1])
    outside = make_events([40], [3], [1], [10])
    with pytest.raises(DataError, match="donor 1: events outside the 34x34 sensor"):
        CollageRenderer([real[0], outside, real[2]], images[:3], nearest=1)
    with pytest.raises(ConfigError, match="exclude"):
        CollageRenderer(real, images, nearest=2).donor_map(images[:2], seed=0, exclude=np.array([0, 99]))


def test_collage_study_smoke(tmp_path, nmnist_small):
    from benchmarks.c2st_collage import main

    res = main(["--smoke", "--real", str(nmnist_small), "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    saved = json.loads((tmp_path / "c2st_collage_smoke.json").read_text())
    assert set(saved["arms"]) == {"learned renderer (shipped)", "collage, 1 nearest donors",
                                  "collage, 3 nearest donors"}
    for name, arm in saved["arms"].items():
        assert 0.0 <= arm["c2st"] <= 1.0 and 0.0 < arm["events_ratio"] < 2.0
        assert -1.0 <= arm["paired_frame_correlation"]["1"] <= 1.0
        assert ("same_class_event_share" in arm) == name.startswith("collage")
    assert res["transfer"]["real_accuracy"]["per_seed"] and saved["transfer"]["donors"] == 30
    apart = saved["donors_apart"]
    assert apart["split"] == {"B": 20, "D1": 10, "D2": 10, "test": 20}
    assert len(apart["arms"]) == 4 and all(0.0 <= v["c2st"] <= 1.0 for v in apart["arms"].values())
    with_views = [name for name, v in apart["arms"].items() if "views" in v]
    assert len(with_views) == 2 and "learned renderer (shipped)" in with_views
    assert set(apart["arms"]["learned renderer (shipped)"]["views"]) == {
        "event_count", "first_last_event_ms", "active_pixels", "time_profile_T30", "count_image_4x4_blocks",
        "count_image"}
