"""Event-level augmentations (data/event_augment.py) and their hook in the trainer / CLI."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data.event_augment import (EVENT_AUGMENTS, EventAugment, apply_event_augment,
                                        parse_event_augment)
from flexsnn.data.events import NMNIST_SENSOR, validate_events
from flexsnn.data.saccade import SaccadeGenerator, load_mnist_images
from flexsnn.errors import ConfigError


@pytest.fixture(scope="module")
def events():
    images, _ = load_mnist_images()
    return SaccadeGenerator(seed=0).generate(images[3], 3)


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", EVENT_AUGMENTS)
def test_each_augmentation_gives_valid_sorted_events_and_leaves_input(events, name):
    before = events.copy()
    out = apply_event_augment(events, NMNIST_SENSOR, parse_event_augment(name), _rng())
    validate_events(out, NMNIST_SENSOR, source=name)
    assert out.dtype == events.dtype and np.all(np.diff(out["t"]) >= 0)
    assert np.array_equal(before, events)  # input untouched
    assert out.size != events.size or not np.array_equal(out, events)  # it did something


def test_effects_match_their_definition(events):
    drop = apply_event_augment(events, NMNIST_SENSOR, EventAugment(("drop",), drop_max=0.5), _rng(1))
    assert drop.size < events.size
    hot = apply_event_augment(events, NMNIST_SENSOR, EventAugment(("hot",), hot_max=3, hot_hz_min=200,
                                                                  hot_hz_max=300), _rng(2))
    assert hot.size > events.size
    before = np.bincount(events["y"].astype(int) * 34 + events["x"], minlength=34 * 34)
    after = np.bincount(hot["y"].astype(int) * 34 + hot["x"], minlength=34 * 34)
    grown = np.flatnonzero(after > before)
    assert 1 <= grown.size <= 3 and (after - before)[grown].min() >= 20  # >= 200 Hz * ~0.3 s / 3
    jit = apply_event_augment(events, NMNIST_SENSOR, EventAugment(("jitter",), jitter_us=1000), _rng(3))
    assert jit.size <= events.size and abs(np.sort(jit["t"]).mean() - events["t"].mean()) < 200
    sp = apply_event_augment(events, NMNIST_SENSOR, EventAugment(("spatial",), spatial_sigma_px=0.0), _rng(4))
    assert np.array_equal(sp, events)  # zero jitter moves nothing


def test_seeded_and_parsed():
    images, _ = load_mnist_images()
    ev = SaccadeGenerator(seed=0).generate(images[0], 0)
    aug = parse_event_augment("all")
    assert aug.names == EVENT_AUGMENTS
    a = apply_event_augment(ev, NMNIST_SENSOR, aug, _rng(5))
    b = apply_event_augment(ev, NMNIST_SENSOR, aug, _rng(5))
    c = apply_event_augment(ev, NMNIST_SENSOR, aug, _rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    state = np.random.get_state()[1].copy()
    apply_event_augment(ev, NMNIST_SENSOR, aug, _rng(7))
    assert np.array_equal(state, np.random.get_state()[1])  # NumPy's global generator restored
    assert not parse_event_augment("") and not parse_event_augment(None)
    assert parse_event_augment(" hot , drop ").names == ("drop", "hot")
    with pytest.raises(ConfigError, match="event_augment"):
        parse_event_augment("drop,blur")
    with pytest.raises(ConfigError):
        EventAugment(("drop",), drop_max=1.5)


def test_trainer_applies_event_augment_before_binning():
    from flexsnn.data.frames import FrameDataset
    from flexsnn.data.saccade import SaccadeMNIST
    from flexsnn.training.trainer import RunContext, TrainConfig, epoch_loader

    with pytest.raises(ConfigError, match="event_augment"):
        TrainConfig(event_augment="bogus")
    ds = SaccadeMNIST(split="test", limit=8)
    frames = FrameDataset(ds, T=5)
    plain = TrainConfig(T=5, scheme={"name": "sdt", "T": 5}, batch_size=8)
    aug = TrainConfig(T=5, scheme={"name": "sdt", "T": 5}, batch_size=8, event_augment="drop,hot")
    x0, y0 = next(iter(epoch_loader(frames, plain, 0, RunContext())))
    x1, y1 = next(iter(epoch_loader(frames, aug, 0, RunContext())))
    x2, _ = next(iter(epoch_loader(frames, aug, 0, RunContext())))
    assert x0.shape == x1.shape == (8, 5, 2, 34, 34) and np.array_equal(y0, y1)
    assert not np.array_equal(x0.numpy(), x1.numpy())
    assert np.array_equal(x1.numpy(), x2.numpy())  # same seed and epoch: same draws
    assert TrainConfig.from_dict(aug.to_dict()) == aug


def test_cli_rejects_unknown_event_augment(tmp_path, capsys):
    from flexsnn.cli import main

    assert main(["train", "--event-augment", "drop,blur", "--out", str(tmp_path / "x")]) == 1
    assert "event_augment" in capsys.readouterr().err
