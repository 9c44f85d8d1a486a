"""Frames agree with tonic's ToFrame; loader shapes and seeded augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import tonic
from hypothesis import given, settings
from hypothesis import strategies as st

from layout import assert_layout
from flexsnn.data.events import SensorSize, empty_events, make_events
from flexsnn.data.frames import (
    Augment,
    FrameDataset,
    augment_frames,
    events_to_frames,
    frame_loader,
    shift_frames,
    to_time_major,
)
from flexsnn.errors import ConfigError

SENSOR = SensorSize(7, 5, 2)  # non-square to catch x/y swaps


def _random_events(rng, n, sensor=SENSOR, t_max=100_000):
    return make_events(rng.integers(0, sensor.width, n), rng.integers(0, sensor.height, n),
                       rng.integers(0, 2, n), np.sort(rng.integers(0, t_max, n)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), T=st.integers(1, 40), t_max=st.integers(1, 200_000),
       seed=st.integers(0, 2**16))
def test_equals_tonic_to_frame(n, T, t_max, seed):
    ev = _random_events(np.random.default_rng(seed), n, t_max=t_max)
    ours = events_to_frames(ev, SENSOR, T)
    theirs = tonic.transforms.ToFrame(sensor_size=tuple(SENSOR), n_time_bins=T)(ev.copy())
    assert ours.dtype == np.float32
    assert_layout(ours, (T, 2, 5, 7))
    np.testing.assert_array_equal(ours, theirs)


def test_pixel_layout_and_binary_mode():
    ev = make_events([6, 6, 0], [1, 1, 4], [1, 1, 0], [0, 10, 100])
    fr = events_to_frames(ev, SENSOR, 2)
    assert fr[0, 1, 1, 6] == 2 and fr.sum() == 2  # last event falls past the last window (tonic)
    assert events_to_frames(ev, SENSOR, 2, mode="binary")[0, 1, 1, 6] == 1


def test_empty_input_defined_as_zero_frames():
    fr = events_to_frames(empty_events(), SENSOR, 4)
    assert_layout(fr, (4, 2, 5, 7))
    assert fr.dtype == np.float32 and not fr.any()


def test_single_polarity_sensor_merges_without_mutating():
    ev = make_events([1, 2], [0, 0], [1, 0], [0, 100])
    fr = events_to_frames(ev, SensorSize(7, 5, 1), 1)
    assert_layout(fr, (1, 1, 5, 7))
    assert ev["p"].tolist() == [1, 0] and fr.sum() == 1


def test_bad_arguments():
    with pytest.raises(ConfigError):
        events_to_frames(empty_events(), SENSOR, 0)
    with pytest.raises(ConfigError):
        events_to_frames(empty_events(), SENSOR, 3, mode="sum")


def test_to_time_major():
    import torch

    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    y = to_time_major(x)
    assert y.shape == (3, 2, 4) and y.is_contiguous() and torch.equal(y[1, 0], x[0, 1])
    assert to_time_major(np.zeros((2, 3, 1))).shape == (3, 2, 1)


def test_shift_frames_zero_fill():
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    s = shift_frames(a, 1, -1)
    assert s[0, 0, 1] == a[0, 1, 0] and s[0, 2].sum() == 0 and s[0, :, 0].sum() == 0


class _Toy:
    name = "toy"
    sensor = SENSOR

    def __init__(self, n=10, seed=0):
        rng = np.random.default_rng(seed)
        self.items = [_random_events(rng, 50) for _ in range(n)]
        self.labels = np.arange(n, dtype=np.int64) % 3

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], int(self.labels[i])


def test_loader_shapes_and_determinism():
    import torch

    ds = _Toy()
    batches = [list(frame_loader(ds, T=6, batch_size=4, shuffle=True, augment=True, seed=5))
               for _ in range(2)]
    x, y = batches[0][0]
    assert_layout(x, (4, 6, 2, 5, 7))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(batches[0]) == 3 and batches[0][-1][0].shape[0] == 2
    for (a, ya), (b, yb) in zip(*batches):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert len(list(frame_loader(ds, T=6, batch_size=4, shuffle=False, drop_last=True))) == 2


def test_augmentation_keeps_or_drops_counts():
    ds = _Toy()
    plain = FrameDataset(ds, T=3)
    aug = FrameDataset(ds, T=3, augment=Augment(flip_p=1.0, max_shift=0))
    x0, _ = plain[0]
    x1, _ = aug[0]
    assert float(x1.sum()) == float(x0.sum())
    np.testing.assert_array_equal(x1.numpy(), x0.numpy()[..., ::-1])
    rng = np.random.default_rng(0)
    shifted = augment_frames(x0.numpy(), Augment(flip_p=0.0, max_shift=2), rng)
    assert shifted.sum() <= x0.sum()
    with pytest.raises(ConfigError):
        Augment(flip_p=2.0)


def test_frame_dataset_cache_and_binary():
    ds = _Toy()
    fd = FrameDataset(ds, T=4, mode="binary")
    a, _ = fd[1]
    b, _ = fd[1]
    assert float(a.max()) <= 1.0 and (a == b).all()
    assert fd._cache.nbytes > 0
    assert FrameDataset(ds, T=4)._cache is fd._cache  # shared per (dataset, T)
    assert FrameDataset(ds, T=5)._cache is not fd._cache


def test_event_augmentations_match_frame_augmentations():
    from flexsnn.data.augment import random_flip_shift

    rng = np.random.default_rng(3)
    for seed in range(20):
        ev = _random_events(rng, 80)
        # keep first and last event in the middle so shifting never moves the bin edges
        ev["x"][[0, -1]], ev["y"][[0, -1]] = 3, 2
        frames = events_to_frames(ev, SENSOR, 4)
        aug = Augment(flip_p=0.5, max_shift=1)
        by_frames = augment_frames(frames, aug, np.random.default_rng(seed))
        by_events = random_flip_shift(ev, SENSOR, np.random.default_rng(seed), flip_p=0.5,
                                      max_shift=1)
        np.testing.assert_array_equal(events_to_frames(by_events, SENSOR, 4), by_frames)
        assert ev["x"][0] == 3  # input untouched
