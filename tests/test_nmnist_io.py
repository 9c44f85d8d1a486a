"""N-MNIST .bin reader/writer: round trips, overflow markers, tonic agreement, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsnn.data.events import EVENT_DTYPE, NMNIST_SENSOR, SensorSize, make_events, validate_events
from flexsnn.data.nmnist import (
    OVERFLOW_INCREMENT_US,
    NMNISTFolder,
    decode_bin,
    encode_bin,
    read_bin,
    write_bin,
)
from flexsnn.errors import DataError, EventFormatError


def _tonic_read(path):
    import tonic

    return tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)


def _same(a, b):
    return a.size == b.size and all(np.array_equal(a[f], b[f]) for f in "xypt")


@st.composite
def event_arrays(draw, max_t=2**25):
    n = draw(st.integers(0, 60))
    x = draw(st.lists(st.integers(0, 33), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, 33), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    t = sorted(draw(st.lists(st.integers(0, max_t), min_size=n, max_size=n)))
    return make_events(x, y, p, t)


@settings(max_examples=60, deadline=None)
@given(event_arrays())
def test_round_trip_including_timestamp_overflow(events):
    data = encode_bin(events)
    back = decode_bin(data)
    assert back.dtype == EVENT_DTYPE
    assert _same(back, events)


@settings(max_examples=25, deadline=None)
@given(event_arrays())
def test_tonic_reads_what_we_write(tmp_path_factory, events):
    path = tmp_path_factory.mktemp("bin") / "a.bin"
    write_bin(path, events)
    assert _same(_tonic_read(path), events)


def test_large_timestamps_use_overflow_markers():
    ev = make_events([1, 2], [3, 4], [1, 0], [5, 2**23 + 10 * OVERFLOW_INCREMENT_US + 7])
    data = encode_bin(ev)
    rec = np.frombuffer(data, np.uint8).reshape(-1, 5)
    assert (rec[:, 1] == 240).sum() >= 1 and rec.shape[0] > 2
    assert _same(decode_bin(data), ev)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert read_bin(path).size == 0


def test_truncated_file_names_file_and_offset(tmp_path):
    ev = make_events([1, 2, 3], [1, 2, 3], [0, 1, 0], [10, 20, 30])
    path = tmp_path / "trunc.bin"
    path.write_bytes(encode_bin(ev)[:-2])
    with pytest.raises(EventFormatError) as info:
        read_bin(path)
    err = info.value
    assert err.byte_offset == 10 and str(path) in str(err) and "truncated" in str(err)


def test_corrupt_coordinate_names_offset(tmp_path):
    ev = make_events([1, 2, 3], [1, 2, 3], [0, 1, 0], [10, 20, 30])
    raw = bytearray(encode_bin(ev))
    raw[5] = 77  # x of event 1
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(EventFormatError) as info:
        read_bin(path)
    assert info.value.byte_offset == 5 and info.value.field == "x" and info.value.value == 77
    raw = bytearray(encode_bin(ev))
    raw[11] = 50  # y of event 2
    path.write_bytes(bytes(raw))
    with pytest.raises(EventFormatError) as info:
        read_bin(path)
    assert info.value.byte_offset == 11 and info.value.field == "y"


def test_decreasing_timestamp_is_corrupt():
    ev = make_events([1, 2], [1, 2], [0, 1], [10, 20])
    raw = bytearray(encode_bin(ev))
    raw[9] = 1  # t of event 1 becomes 1 µs
    with pytest.raises(EventFormatError) as info:
        decode_bin(bytes(raw), source="x.bin")
    assert info.value.field == "t" and info.value.byte_offset == 7 and "x.bin" in str(info.value)


def test_sensor_bounds_on_read():
    ev = make_events([20], [5], [1], [0])
    with pytest.raises(EventFormatError):
        decode_bin(encode_bin(ev), sensor=SensorSize(16, 16, 2))


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError):
        read_bin(tmp_path / "nope.bin")


def test_encode_rejects_unencodable():
    with pytest.raises(EventFormatError):
        encode_bin(make_events([1, 2], [1, 2], [0, 1], [20, 10]))
    with pytest.raises(EventFormatError):
        encode_bin(make_events([1], [240], [0], [1]))


def _fake_tree(root, n_per_class=5, test=False, rng=None):
    rng = rng or np.random.default_rng(0)
    for folder in ("Train", "Test") if test else ("Train",):
        for d in range(10):
            for k in range(n_per_class):
                n = int(rng.integers(1, 30))
                ev = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                                 rng.integers(0, 2, n), np.sort(rng.integers(0, 300_000, n)))
                write_bin(root / folder / str(d) / f"{d * 100 + k:05d}.bin", ev)


def test_folder_single_train_split_is_stratified_and_deterministic(tmp_path):
    _fake_tree(tmp_path, n_per_class=5)
    tr = NMNISTFolder(tmp_path, split="train", seed=3)
    te = NMNISTFolder(tmp_path, split="test", seed=3)
    assert len(tr) == 40 and len(te) == 10
    assert np.bincount(te.labels).tolist() == [1] * 10
    assert not set(tr.files) & set(te.files)
    assert NMNISTFolder(tmp_path, split="test", seed=3).files == te.files
    assert len(NMNISTFolder(tmp_path, split="all")) == 50
    lim = NMNISTFolder(tmp_path, split="train", seed=3, limit=20)
    assert np.bincount(lim.labels).tolist() == [2] * 10
    ev, label = tr[0]
    validate_events(ev, NMNIST_SENSOR)
    assert label == 0


def test_folder_with_train_and_test(tmp_path):
    _fake_tree(tmp_path, n_per_class=2, test=True)
    assert all("Test" in str(f) for f in NMNISTFolder(tmp_path, split="test").files)
    assert len(NMNISTFolder(tmp_path, split="all")) == 40


def test_missing_folder_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="--download"):
        NMNISTFolder(tmp_path / "none")


@pytest.mark.realdata
def test_agrees_with_tonic_on_real_files(nmnist_small):
    files = sorted((nmnist_small / "Train").glob("*/*.bin"))[::97]
    for f in files:
        ours = read_bin(f)
        validate_events(ours, NMNIST_SENSOR, source=str(f))
        assert _same(ours, _tonic_read(f))
        assert encode_bin(ours) == f.read_bytes()


@pytest.mark.realdata
def test_load_nmnist_small(nmnist_small):
    from flexsnn.data.registry import load_event_dataset

    tr = load_event_dataset("nmnist", root=nmnist_small, split="train")
    te = load_event_dataset("nmnist", root=nmnist_small, split="test")
    assert len(tr) + len(te) == 1000 and tr.name == "nmnist"
    assert 150 <= len(te) <= 250
    ev, label = te[0]
    assert 1000 < ev.size < 8000 and 0 <= label <= 9
