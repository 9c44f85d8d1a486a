"""DVS128 Gesture and CIFAR10-DVS loaders (data/dvs.py) on small files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.data.dvs import load_cifar10_dvs, load_dvs_gesture, read_cifar10dvs_aedat, read_gesture_npy
from flexsnn.data.registry import load_event_dataset
from flexsnn.errors import DataError, EventFormatError


def _gesture_tree(root, rng):
    for split, users in (("ibmGestureTrain", ("user01_fluorescent", "user02_led")), ("ibmGestureTest", ("user24_natural",))):
        for u in users:
            d = root / "DVSGesture" / split / u
            d.mkdir(parents=True)
            for label in (0, 3, 10):
                n = 50
                arr = np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                                np.sort(rng.integers(0, 2000, n))], 1).astype(np.float64)   # t in ms
                np.save(d / f"{label}.npy", arr)


def test_dvs_gesture_folder(tmp_path):
    rng = np.random.default_rng(0)
    _gesture_tree(tmp_path, rng)
    train = load_event_dataset("dvsgesture", split="train", root=tmp_path)
    test = load_dvs_gesture(tmp_path, split="test", size=None)
    assert len(train) == 6 and len(test) == 3 and sorted(set(train.labels.tolist())) == [0, 3, 10]
    ev, label = test[0]
    raw = np.load(test.files[0])
    assert ev.size == 50 and ev["t"].tolist() == (raw[:, 3] * 1000).astype(np.int64).tolist()   # ms -> µs
    assert test.sensor == (128, 128, 2)
    ev48, _ = train[0]
    assert train.sensor == (48, 48, 2) and ev48["x"].max() < 48
    bad = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user02_led" / "3.npy"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(EventFormatError, match=r"3\.npy"):
        read_gesture_npy(bad)
    with pytest.raises(DataError, match="--download"):
        load_dvs_gesture(tmp_path / "empty")
    with pytest.raises(DataError, match="--root"):
        load_event_dataset("dvsgesture")


def _write_aedat(path, x, y, p, t):
    """AEDAT 2.0 as CIFAR10-DVS ships it: header lines, then big-endian (address, timestamp) pairs."""
    xs, ys = 127 - np.asarray(y), 127 - np.asarray(x)      # the inverse of the documented decoding
    addr = (ys << 8) | (xs << 1) | (1 - np.asarray(p))
    words = np.stack([addr, np.asarray(t)], 1).astype(">u4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + words.tobytes())


def test_cifar10_dvs_original_aedat_and_split(tmp_path):
    rng = np.random.default_rng(1)
    truth = {}
    for k, c in enumerate(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")):
        for i in range(10):
            n = 30
            x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
            t = 1000 + np.sort(rng.integers(0, 100_000, n))
            _write_aedat(tmp_path / c / f"cifar10_{c}_{i}.aedat", x, y, p, t)
            truth[f"cifar10_{c}_{i}"] = (x, y, p, t - t[0])
    ev = read_cifar10dvs_aedat(tmp_path / "bird" / "cifar10_bird_4.aedat")
    x, y, p, t = truth["cifar10_bird_4"]
    order = np.argsort(t, kind="stable")
    assert ev["x"].tolist() == x[order].tolist() and ev["y"].tolist() == y[order].tolist()
    assert ev["p"].tolist() == p[order].tolist() and ev["t"].tolist() == t[order].tolist()
    train = load_cifar10_dvs(tmp_path, split="train", size=None)
    test = load_event_dataset("cifar10dvs", split="test", root=tmp_path)
    assert len(train) == 90 and len(test) == 10 and sorted(test.labels.tolist()) == list(range(10))  # 9:1 stratified
    assert not set(train.files) & set(test.files) and test.sensor == (48, 48, 2)
    bad = tmp_path / "cat" / "cifar10_cat_0.aedat"
    data = bad.read_bytes()
    bad.write_bytes(data[:-3])
    with pytest.raises(EventFormatError, match=r"cifar10_cat_0\.aedat.*byte"):
        read_cifar10dvs_aedat(bad)
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(EventFormatError, match="AER-DAT"):
        read_cifar10dvs_aedat(bad)
    with pytest.raises(DataError, match="class folders"):
        load_cifar10_dvs(tmp_path / "nothing")


def test_vggsnn_runs_on_dvs_frames(tmp_path):
    from flexsnn.data.frames import frame_loader, to_time_major
    from flexsnn.models.zoo import build_model

    _gesture_tree(tmp_path, np.random.default_rng(2))
    ds = load_dvs_gesture(tmp_path, split="train")
    x, y = next(iter(frame_loader(ds, T=4, batch_size=3, shuffle=False)))
    model = build_model("vggsnn", width=2, num_classes=11, T=4)
    model.set_temporal_config((4, 3, 2, 2, 1, 1, 1, 1))
    out = model(to_time_major(x))
    assert x.shape == (3, 4, 2, 48, 48) and out.shape == (1, 3, 11) and torch.isfinite(out).all()
