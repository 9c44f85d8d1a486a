"""saccade-mnist cache integrity: every offset and every hash checked; a damaged cache is
generated again."""

from __future__ import annotations

import json

import numpy as np
import pytest

import flexsnn.data.saccade as saccade
import flexsnn.data.saccade_cache as sc
from flexsnn.data.saccade import SaccadeGenerator, load_mnist_images
from flexsnn.errors import DataError


@pytest.fixture(scope="module")
def small():
    x, y = load_mnist_images()
    idx = [0, 1, 2]
    return x[idx], y[idx], SaccadeGenerator(seed=0).generate_many(x[idx], idx)


def _same(a, b):
    return a.size == b.size and all(np.array_equal(a[f], b[f]) for f in "xypt")


def _cache(tmp_path, small, name="c"):
    sc._VERIFIED.clear()
    return sc.write_cache_folder(tmp_path / name, small[2], small[1], {"version": 1})


def test_fresh_cache_records_and_passes_its_hashes(tmp_path, small):
    folder = _cache(tmp_path, small)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["sha256"]) == set(sc.ARRAY_FILES) and len(meta["meta_sha256"]) == 64
    store = sc._CachedStore(folder)
    assert all(_same(store.get(i), small[2][i]) for i in range(3))


def test_an_edited_offset_is_refused_by_hash(tmp_path, small):
    folder = _cache(tmp_path, small)
    off = np.load(folder / "offsets.npy")
    off[1] += 1  # still increasing: only the hash can tell
    np.save(folder / "offsets.npy", off)
    with pytest.raises(DataError, match=r"offsets\.npy sha256 .* does not match meta\.json"):
        sc.verify_cache_folder(folder)


def test_edited_meta_is_refused_by_its_own_hash(tmp_path, small):
    folder = _cache(tmp_path, small)
    meta = json.loads((folder / "meta.json").read_text())
    meta["n_samples"] = 2
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="meta_sha256"):
        sc.verify_cache_folder(folder)


def _legacy(folder):
    """A cache as written before hashes existed."""
    meta = json.loads((folder / "meta.json").read_text())
    for key in ("sha256", "meta_sha256"):
        meta.pop(key)
    (folder / "meta.json").write_text(json.dumps(meta))
    sc._VERIFIED.clear()


@pytest.mark.parametrize("index, value, message", [
    (2, 10**9, r"offsets\[3\]=.* is below offsets\[2\]=1000000000"),   # a sample running to the end
    (1, 0, None),                                                       # a sample with 0 events: legal
    (0, 5, r"offsets\[0\]=5, expected 0"),
    (3, -1, r"offsets\[3\]=\d+, expected n_events="),  # -1: one past the last event
])
def test_every_offset_is_checked_in_a_cache_without_hashes(tmp_path, small, index, value, message):
    folder = _cache(tmp_path, small)
    _legacy(folder)
    off = np.load(folder / "offsets.npy")
    off[index] = off[index] + 1 if value == -1 else value
    if message is None:  # 0 events for sample 0 is a valid (if odd) layout: offsets stay sorted
        off[1] = 0
        np.save(folder / "offsets.npy", off)
        sc.verify_cache_folder(folder)
        return
    np.save(folder / "offsets.npy", off)
    with pytest.raises(DataError, match=message):
        sc.verify_cache_folder(folder)


def test_a_sound_cache_without_hashes_gets_them(tmp_path, small):
    folder = _cache(tmp_path, small)
    _legacy(folder)
    sc.verify_cache_folder(folder)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sha256"]["events.npy"] == sc._file_sha256(folder / "events.npy")
    sc._VERIFIED.clear()
    sc.verify_cache_folder(folder)  # and passes with them


def test_wrong_dtype_and_pickled_arrays_are_refused(tmp_path, small):
    folder = _cache(tmp_path, small)
    _legacy(folder)
    np.save(folder / "offsets.npy", np.load(folder / "offsets.npy").astype(np.int32))
    with pytest.raises(DataError, match="offsets.npy has dtype int32"):
        sc.verify_cache_folder(folder)
    np.save(folder / "offsets.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="unreadable"):
        sc.verify_cache_folder(folder)


def test_damaged_cache_is_generated_again(tmp_path, small, monkeypatch):
    """build_cache on a damaged cache removes it and writes a correct one (the generator runs
    on 3 images here instead of 5,000)."""
    monkeypatch.setattr(saccade, "load_mnist_images", lambda: (small[0], small[1]))
    params = saccade.DATASET_PARAMS  # what `small` was generated with
    sc._VERIFIED.clear()
    folder = saccade.build_cache(params, 0, tmp_path)
    off = np.load(folder / "offsets.npy")
    off[2] = 10**9
    np.save(folder / "offsets.npy", off)
    sc._VERIFIED.clear()
    again = saccade.build_cache(params, 0, tmp_path)
    assert again == folder
    store = sc._CachedStore(again)
    assert all(_same(store.get(i), small[2][i]) for i in range(3))
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # nothing damaged left behind


def test_limited_dataset_with_a_damaged_cache_generates_its_samples(tmp_path, small):
    params = saccade.DATASET_PARAMS
    folder = tmp_path / f"saccade-mnist-{params.key(0)}"
    folder.mkdir()
    (folder / "meta.json").write_text("{broken")
    ds = saccade.SaccadeMNIST(split="all", seed=0, limit=3, cache_dir=tmp_path)
    assert ds.cache_path is None and not folder.exists()
    assert len(ds) == 3
    x, _ = load_mnist_images()
    i = int(ds.image_index[0])
    assert _same(ds[0][0], SaccadeGenerator(seed=0).generate(x[i], i))
