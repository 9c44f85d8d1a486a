"""load_event_dataset: both datasets, the EventDataset contract, errors."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data.events import NMNIST_SENSOR, make_events, validate_events
from flexsnn.data.frames import FrameDataset, frame_loader
from flexsnn.data.registry import load_event_dataset
from flexsnn.errors import DataError, EventFormatError


def _check_contract(ds, name):
    assert ds.name == name and tuple(ds.sensor) == tuple(NMNIST_SENSOR)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
    ev, label = ds[0]
    assert isinstance(label, int) and label == ds.labels[0]
    validate_events(ev, ds.sensor)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_saccade_mnist_limited(tmp_path):
    ds = load_event_dataset("saccade-mnist", split="test", seed=0, limit=10, cache_dir=tmp_path)
    _check_contract(ds, "saccade-mnist")
    assert len(ds) == 10
    again = load_event_dataset("saccade-mnist", split="test", seed=0, limit=10, cache_dir=tmp_path)
    assert all(np.array_equal(ds[i][0], again[i][0]) for i in range(10))
    x, y = next(iter(frame_loader(ds, T=4, batch_size=10, shuffle=False)))
    assert tuple(x.shape) == (10, 4, 2, 34, 34) and y.tolist() == ds.labels.tolist()


def test_nmnist_from_env(tmp_path, monkeypatch):
    from flexsnn.data.nmnist import write_bin

    for d in range(10):
        ev = make_events([1, 2], [3, 4], [0, 1], [0, 100])
        write_bin(tmp_path / "Test" / str(d) / "00001.bin", ev)
        write_bin(tmp_path / "Train" / str(d) / "00001.bin", ev)
    monkeypatch.setenv("FLEXSNN_NMNIST_ROOT", str(tmp_path))
    ds = load_event_dataset("nmnist", split="test")
    _check_contract(ds, "nmnist")
    assert len(ds) == 10


def test_errors(monkeypatch):
    monkeypatch.delenv("FLEXSNN_NMNIST_ROOT", raising=False)
    with pytest.raises(DataError, match="unknown dataset"):
        load_event_dataset("emnist")
    with pytest.raises(DataError, match="static image dataset"):   # issue 18: mnist is static images now
        load_event_dataset("mnist")
    with pytest.raises(DataError, match="--root"):
        load_event_dataset("nmnist")
    with pytest.raises(DataError, match="split"):
        load_event_dataset("saccade-mnist", split="val", limit=1)


def test_frame_dataset_refuses_bad_events():
    class Bad:
        name = "bad"
        sensor = NMNIST_SENSOR
        labels = np.zeros(1, dtype=np.int64)

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return make_events([40], [1], [0], [5]), 0

    with pytest.raises(EventFormatError, match=r"bad\[0\]"):
        FrameDataset(Bad(), T=2)[0]


@pytest.mark.realdata
def test_nmnist_small_frames(nmnist_small):
    ds = load_event_dataset("nmnist", root=nmnist_small, split="test", limit=20)
    _check_contract(ds, "nmnist")
    x, y = next(iter(frame_loader(ds, T=5, batch_size=20, shuffle=True, augment=True, seed=1)))
    assert tuple(x.shape) == (20, 5, 2, 34, 34) and x.sum() > 20 * 1000 * 0.8
