"""saccade-mnist generator: determinism, valid events, kernel agreement, cache, split."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data.dvs_kernel import get_kernel, simulate_pixels_reference
from flexsnn.data.events import NMNIST_SENSOR, validate_events
from flexsnn.data.saccade import (
    SaccadeGenerator,
    SaccadeMNIST,
    SaccadeParams,
    _CachedStore,
    load_mnist_images,
    saccade_path,
    write_cache_folder,
)
from flexsnn.errors import ConfigError


@pytest.fixture(scope="module")
def images():
    x, y = load_mnist_images()
    return x[[0, 500, 1000]], y[[0, 500, 1000]]


def _same(a, b):
    return a.size == b.size and all(np.array_equal(a[f], b[f]) for f in "xypt")


def test_path_corners_and_smooth_velocity():
    whole = SaccadeParams(motion_windows_us=())
    corners = np.asarray(whole.path_px)                # the triangle (fitted to N-MNIST: about 3.5, 7)
    assert corners.shape == (4, 2) and np.allclose(corners[0], corners[-1])
    dx, dy = saccade_path(whole, whole.segment_us * np.arange(4.0))   # corners at the segment ends
    np.testing.assert_allclose(np.c_[dx, dy], corners, atol=1e-9)
    p = SaccadeParams(velocity="cosine", motion_windows_us=(
        (0.0, 95_000.0), (102_000.0, 200_000.0), (212_000.0, 308_000.0)))
    ends = [0.0] + [w[1] for w in p.motion_windows_us]
    dx, dy = saccade_path(p, np.array(ends))
    np.testing.assert_allclose(np.c_[dx, dy], corners, atol=1e-9)
    tt = np.linspace(0, 315e3, 3151)
    for params in (whole, p, SaccadeParams()):
        dx, dy = saccade_path(params, tt)
        speed = np.hypot(np.diff(dx), np.diff(dy))
        assert speed[:3].max() < 1e-3 and speed.max() < 0.03  # starts at rest, no jumps
    # rests between the saccades
    dx, dy = saccade_path(p, np.array([96e3, 101e3]))
    np.testing.assert_allclose(np.c_[dx, dy], [corners[1]] * 2, atol=1e-9)
    with pytest.raises(ConfigError):
        SaccadeParams(motion_windows_us=((0.0, 1.0),))


def test_generation_is_deterministic_and_valid(images):
    imgs, _ = images
    a = SaccadeGenerator(seed=1).generate(imgs[0], 7)
    b = SaccadeGenerator(seed=1).generate(imgs[0], 7)
    c = SaccadeGenerator(seed=2).generate(imgs[0], 7)
    assert _same(a, b) and not _same(a, c)
    validate_events(a, NMNIST_SENSOR, source="saccade[7]")
    assert 1000 < a.size < 20_000
    assert 0.3 < a["p"].mean() < 0.7
    assert a["t"].max() <= 316_000


def test_blank_image_gives_only_noise():
    p = SaccadeParams(noise_hz=0.0, hot_pixels=())
    assert SaccadeGenerator(p).generate(np.zeros((28, 28)), 0).size == 0
    noisy = SaccadeGenerator(SaccadeParams(noise_hz=5.0, hot_pixels=())).generate(np.zeros((28, 28)), 0)
    assert 0 < noisy.size < 5 * 34 * 34  # ~ 5 Hz * 1156 px * 0.315 s
    validate_events(noisy, NMNIST_SENSOR)


def test_numba_kernel_equals_reference(images):
    imgs, _ = images
    gen = SaccadeGenerator(SaccadeParams(frame_dt_us=5000.0), seed=0)
    img = gen.prepare_image(imgs[1])
    ref0 = np.zeros(34 * 34)
    outs = []
    for fn in (simulate_pixels_reference, get_kernel()):
        bufs = [np.zeros(40_000, np.int64) for _ in range(3)] + [np.zeros(40_000)]
        n = fn(img, gen.pos_x, gen.pos_y, gen.frame_t, gen.c_on, gen.c_off, ref0, 1000.0, 0.1,
               34, 34, *bufs)
        outs.append((n, [b[:n] for b in bufs]))
    assert outs[0][0] == outs[1][0] > 0
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_kernel_reports_full_buffer(images):
    gen = SaccadeGenerator(seed=0)
    bufs = [np.zeros(5, np.int64) for _ in range(3)] + [np.zeros(5)]
    n = get_kernel()(gen.prepare_image(images[0][0]), gen.pos_x, gen.pos_y, gen.frame_t,
                     gen.c_on, gen.c_off, np.zeros(34 * 34), 0.0, 0.1, 34, 34, *bufs)
    assert n == -1


def test_refractory_limits_rate(images):
    imgs, _ = images
    quiet = dict(noise_hz=0.0, jitter_us=0.0, latency_tail_us=0.0, hot_pixels=())
    fast = SaccadeGenerator(SaccadeParams(refractory_us=0.0, **quiet))
    slow = SaccadeGenerator(SaccadeParams(refractory_us=20_000.0, **quiet))
    a, b = fast.generate(imgs[2], 0), slow.generate(imgs[2], 0)
    assert b.size < a.size
    key = b["y"].astype(int) * 34 + b["x"]
    for k in np.unique(key):
        assert np.diff(b["t"][key == k]).min(initial=10**9) >= 20_000 - 1


def test_params_validated_and_keyed():
    with pytest.raises(ConfigError):
        SaccadeParams(threshold_on=-1)
    assert SaccadeParams().key(0) != SaccadeParams().key(1)
    assert SaccadeParams().key(0) != SaccadeParams(noise_hz=1.0).key(0)


def test_limited_dataset_in_memory_matches_generator(tmp_path):
    ds = SaccadeMNIST(split="test", seed=0, limit=10, cache_dir=tmp_path)
    assert len(ds) == 10 and ds.name == "saccade-mnist" and ds.cache_path is None
    assert np.bincount(ds.labels).tolist() == [1] * 10
    assert tuple(ds.sensor) == (34, 34, 2)
    ev, label = ds[3]
    imgs, labels = load_mnist_images()
    idx = int(ds.image_index[3])
    assert labels[idx] == label
    assert _same(ev, SaccadeGenerator(seed=0).generate(imgs[idx], idx))
    assert not list(tmp_path.iterdir())  # nothing cached for a limited set
    train = SaccadeMNIST(split="train", seed=0, limit=10, cache_dir=tmp_path)
    assert not set(train.image_index) & set(ds.image_index)


def test_split_is_stratified_4000_1000():
    from flexsnn.data.splits import stratified_split

    _, labels = load_mnist_images()
    is_test = stratified_split(labels, test_fraction=0.2, seed=0)
    assert is_test.sum() == 1000 and np.bincount(labels[is_test]).tolist() == [100] * 10
    assert np.array_equal(is_test, stratified_split(labels, test_fraction=0.2, seed=0))


def test_cache_write_is_atomic(tmp_path, images, monkeypatch):
    recs = SaccadeGenerator(seed=0).generate_many(images[0], [0, 1, 2])
    final = tmp_path / "saccade-mnist-abc"
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, arr):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_save(path, arr)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError):
        write_cache_folder(final, recs, images[1], {"version": 1})
    monkeypatch.setattr(np, "save", real_save)
    assert not final.exists() and list(tmp_path.iterdir()) == []  # nothing partial left
    write_cache_folder(final, recs, images[1], {"version": 1})
    cs = _CachedStore(final)
    assert all(_same(cs.get(i), recs[i]) for i in range(3))
    # a second writer finding the folder complete keeps it
    write_cache_folder(final, recs[:1], images[1][:1], {"version": 1})
    assert _CachedStore(final).labels.size == 3


def test_inconsistent_cache_is_refused(tmp_path, images):
    from flexsnn.errors import DataError

    recs = SaccadeGenerator(seed=0).generate_many(images[0][:2], [0, 1])
    final = write_cache_folder(tmp_path / "c", recs, images[1][:2], {})
    np.save(final / "offsets.npy", np.array([0, 5, 7]))
    with pytest.raises(DataError, match="delete it"):
        _CachedStore(final)


def test_partial_temp_folder_is_not_a_cache(tmp_path):
    p = SaccadeParams()
    (tmp_path / f".saccade-mnist-{p.key(0)}.xyz").mkdir()
    ds = SaccadeMNIST(split="test", limit=2, cache_dir=tmp_path)
    assert ds.cache_path is None and len(ds) == 2


def test_sensor_effects_polarity_latency_hot_pixels(images):
    """invert_polarity swaps p and nothing else; the latency tail only delays events; listed
    hot pixels fire at their rate in every recording; switched off, recordings are unchanged."""
    imgs, _ = images
    base = dict(invert_polarity=False, latency_tail_us=0.0, hot_pixels=(), hot_pixel_fraction=0.0)
    plain = SaccadeGenerator(SaccadeParams(**base)).generate(imgs[0], 4)
    inv = SaccadeGenerator(SaccadeParams(**{**base, "invert_polarity": True})).generate(imgs[0], 4)
    assert np.array_equal(inv["p"], 1 - plain["p"]) and np.array_equal(inv["t"], plain["t"])
    late = SaccadeGenerator(SaccadeParams(**{**base, "latency_tail_us": 5000.0})).generate(imgs[0], 4)
    assert late.size == plain.size and late["t"].mean() > plain["t"].mean() + 3000
    hot = SaccadeParams(**{**base, "hot_pixels": ((5, 6, 400.0),)})
    for index in (4, 9):
        ev = SaccadeGenerator(hot).generate(np.zeros((28, 28)), index)
        at = (ev["x"] == 5) & (ev["y"] == 6)
        assert 60 < at.sum() < 200  # 400 Hz * 0.315 s = 126
    with pytest.raises(ConfigError, match="hot_pixels"):
        SaccadeParams(hot_pixels=((40, 0, 1.0),))
    with pytest.raises(ConfigError, match="latency_tail_us"):
        SaccadeParams(latency_tail_us=-1.0)
    assert SaccadeParams().key(0) != SaccadeParams(invert_polarity=not SaccadeParams().invert_polarity).key(0)


def test_measured_speed_profile_moves_the_digit_as_measured():
    """velocity="measured": progress is the integral of the profile inside each window; a flat
    profile is constant speed, a profile that is zero in a window's first half holds the digit
    at the corner until then."""
    windows = ((0.0, 100e3), (100e3, 200e3), (200e3, 300e3))
    const = SaccadeParams(velocity="constant", motion_windows_us=windows)
    flat = SaccadeParams(velocity="measured", speed_profile=(1.0,) * 158, motion_windows_us=windows)
    tt = np.linspace(0, 315e3, 631)
    np.testing.assert_allclose(np.c_[saccade_path(flat, tt)], np.c_[saccade_path(const, tt)], atol=1e-9)
    late = np.r_[np.zeros(25), np.ones(133)]           # 2 ms bins: still until 50 ms
    held = SaccadeParams(velocity="measured", speed_profile=tuple(late), motion_windows_us=windows)
    dx, dy = saccade_path(held, np.array([0.0, 40e3, 50e3, 75e3, 100e3]))
    corners = np.asarray(held.path_px)
    np.testing.assert_allclose(np.c_[dx, dy][:3], [corners[0]] * 3, atol=1e-9)
    np.testing.assert_allclose(np.c_[dx, dy][3], (corners[0] + corners[1]) / 2, atol=1e-9)
    np.testing.assert_allclose(np.c_[dx, dy][4], corners[1], atol=1e-9)
    with pytest.raises(ConfigError, match="speed_profile"):
        SaccadeParams(velocity="measured", speed_profile=())
    with pytest.raises(ConfigError, match="speed_profile"):
        SaccadeParams(velocity="measured", speed_profile=(1.0, -1.0))


def test_display_gamma_and_threshold_correlation(images):
    """display_gamma darkens grey levels (g -> g ** gamma) before the blur; threshold_correlation
    couples each pixel's OFF threshold to its ON threshold and leaves the ON thresholds as drawn."""
    imgs, _ = images
    sharp = dict(blur_sigma_px=0.0)
    plain = SaccadeGenerator(SaccadeParams(display_gamma=1.0, **sharp)).prepare_image(imgs[0])
    dark = SaccadeGenerator(SaccadeParams(display_gamma=2.2, **sharp)).prepare_image(imgs[0])
    np.testing.assert_allclose(dark, plain ** 2.2)
    a = SaccadeGenerator(SaccadeParams(threshold_correlation=0.0, threshold_sigma=0.03))
    b = SaccadeGenerator(SaccadeParams(threshold_correlation=0.8, threshold_sigma=0.03))
    assert np.array_equal(a.c_on, b.c_on)
    assert abs(np.corrcoef(a.c_on, a.c_off)[0, 1]) < 0.15
    assert 0.72 < np.corrcoef(b.c_on, b.c_off)[0, 1] < 0.88
    with pytest.raises(ConfigError, match="display_gamma"):
        SaccadeParams(display_gamma=0.0)
    with pytest.raises(ConfigError, match="threshold_correlation"):
        SaccadeParams(threshold_correlation=1.0)
