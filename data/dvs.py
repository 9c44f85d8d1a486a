"""DVS128 Gesture and CIFAR10-DVS from local folders (the loader rules of N-MNIST).

Nothing is downloaded unless asked (``download=True`` fetches through ``tonic.datasets``); a
missing folder raises :class:`~flexsnn.errors.DataError` saying how to get it; a truncated or
corrupt file raises :class:`~flexsnn.errors.EventFormatError` naming the file (and the byte
offset where it can). Events come out in flexsnn's dtype (``x``, ``y`` int16, ``p`` uint8, ``t``
int64 µs, sorted), validated against the sensor.

- **DVS128 Gesture** (11 classes, 128x128): tonic's preprocessed layout
  ``<root>/DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy`` (or without the
  ``DVSGesture/`` level): each ``.npy`` is a ``[N, 4]`` array of x, y, p, t (t in ms), read with
  ``numpy.load(allow_pickle=False)``. The official train/test split of the release.
- **CIFAR10-DVS** (10 classes, 128x128): the original release's AEDAT 2.0 files
  ``<root>/<class>/*.aedat`` (``#`` header lines, then big-endian ``uint32`` pairs
  ``(address, timestamp µs)``; ``x = 127 - ((a & 0x7F00) >> 8)``, ``y = 127 - ((a & 0xFE) >> 1)``,
  ``p = 1 - (a & 1)``, as spikingjelly decodes them), or tonic's ``<root>/CIFAR10DVS/<class>/
  *.aedat4`` (through ``tonic.io.read_aedat4``, which needs the ``aedat`` package). The release
  has no split: a seeded class-stratified 9:1 split (the MTT paper's ratio).

``size`` (e.g. 48, the MTT/TET/TMC papers' frame size) scales coordinates down
(``x * size // 128``), so frames are ``size x size``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from flexsnn.data.events import EVENT_DTYPE, SensorSize, validate_events
from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import DataError, EventFormatError

DVS_DATASETS = ("dvsgesture", "cifar10dvs")
GESTURE_CLASSES = 11
CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DVS128 = 128


def _to_events(x, y, p, t, source: str, sensor: SensorSize) -> np.ndarray:
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"], ev["t"] = x, y, p, t
    order = np.argsort(ev["t"], kind="stable")
    ev = ev[order]
    validate_events(ev, sensor, source=source)
    return ev


def read_gesture_npy(path: str | os.PathLike) -> np.ndarray:
    """One DVS128 Gesture sample (tonic's ``.npy``: ``[N, 4]`` x, y, p, t in ms) -> events (t in µs)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise EventFormatError(f"cannot read the .npy sample ({err}); re-download or re-extract it",
                               source=str(path)) from err
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise EventFormatError(f"expected an [N, 4] array of x, y, p, t, got shape {arr.shape}", source=str(path))
    t_us = np.rint(arr[:, 3].astype(np.float64) * 1000.0).astype(np.int64)
    return _to_events(arr[:, 0], arr[:, 1], arr[:, 2], t_us, str(path), SensorSize(DVS128, DVS128, 2))


def read_cifar10dvs_aedat(path: str | os.PathLike) -> np.ndarray:
    """One CIFAR10-DVS recording of the original release (AEDAT 2.0) -> events.

    Raises:
        EventFormatError: no ``#!AER-DAT`` header, or a data part that is not whole 8-byte
            records (names the byte offset).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise EventFormatError(f"cannot read ({err})", source=str(path)) from err
    pos = 0
    version = None
    while pos < len(raw) and raw[pos:pos + 1] == b"#":
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        if b"!AER-DAT" in raw[pos:end]:
            version = raw[pos:end].decode("latin-1").strip()
        pos = end
    if version is None:
        raise EventFormatError("no '#!AER-DAT' header: not an AEDAT file (CIFAR10-DVS's original release)",
                               source=str(path), byte_offset=0)
    body = len(raw) - pos
    if body % 8:
        whole = pos + (body // 8) * 8
        raise EventFormatError(f"truncated: the event data ({body} bytes) is not whole 8-byte records",
                               source=str(path), byte_offset=whole)
    words = np.frombuffer(raw, dtype=">u4", offset=pos).astype(np.int64)
    addr, ts = words[0::2], words[1::2]
    x = 127 - ((addr & 0x7F00) >> 8)
    y = 127 - ((addr & 0xFE) >> 1)
    p = 1 - (addr & 1)
    return _to_events(x, y, p, ts - (ts[0] if ts.size else 0), str(path), SensorSize(DVS128, DVS128, 2))


def read_cifar10dvs_aedat4(path: str | os.PathLike) -> np.ndarray:
    """One recording of tonic's CIFAR10-DVS (``.aedat4``) through ``tonic.io.read_aedat4``."""
    try:
        import aedat  # noqa: F401  (tonic's AEDAT4 reader needs it)
    except ImportError as err:
        raise DataError(f"{path}: reading .aedat4 needs the 'aedat' package (pip install aedat), or use the "
                        "original release's .aedat files") from err
    from tonic.io import read_aedat4

    try:
        ev = read_aedat4(str(path))
    except Exception as err:  # tonic/aedat raise plain Exceptions on corrupt files
        raise EventFormatError(f"cannot decode the .aedat4 file ({err})", source=str(path)) from err
    t = ev["t"].astype(np.int64)
    return _to_events(ev["x"], ev["y"], ev["p"].astype(np.uint8), t - (t[0] if t.size else 0), str(path),
                      SensorSize(DVS128, DVS128, 2))


class DVSFolder:
    """Recordings listed from a folder: ``ds[i] -> (events, label)``; ``.sensor``, ``.labels``, ``.name``.

    Files are read when indexed; ``size`` scales the 128x128 coordinates down to ``size x size``.
    """

    def __init__(self, name: str, files: list[Path], labels: np.ndarray, reader: Callable[[Path], np.ndarray],
                 *, size: Optional[int] = None) -> None:
        if size is not None and not 1 <= int(size) <= DVS128:
            raise DataError(f"{name}: size={size} is invalid: expected 1..{DVS128} pixels (48 in the papers)")
        self.name = name
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.reader = reader
        self.size = None if size is None else int(size)
        side = self.size or DVS128
        self.sensor = SensorSize(side, side, 2)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        ev = self.reader(self.files[index])
        if self.size is not None and self.size != DVS128:
            ev = ev.copy()
            ev["x"] = (ev["x"].astype(np.int64) * self.size // DVS128).astype(np.int16)
            ev["y"] = (ev["y"].astype(np.int64) * self.size // DVS128).astype(np.int16)
        return ev, int(self.labels[index])


def _gesture_dir(root: Path, split: str) -> Path:
    folder = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    for cand in (root / "DVSGesture" / folder, root / folder):
        if cand.is_dir():
            return cand
    return root / "DVSGesture" / folder


def load_dvs_gesture(root: str | os.PathLike, *, split: str = "train", limit: Optional[int] = None,
                     download: bool = False, size: Optional[int] = 48) -> DVSFolder:
    """DVS128 Gesture from a local folder (tonic's layout); ``download`` fetches it through tonic.
    ``size`` 48 by default (the VGGSNN preset's frames); ``None`` keeps 128x128."""
    if split not in ("train", "test"):
        raise DataError(f"split={split!r} is invalid for dvsgesture: expected 'train' or 'test'")
    root = Path(root)
    folder = _gesture_dir(root, split)
    if not folder.is_dir() and download:
        import tonic

        tonic.datasets.DVSGesture(save_to=str(root), train=split == "train")
        folder = _gesture_dir(root, split)
    if not folder.is_dir():
        raise DataError(f"dvsgesture: no folder {folder}; fix: pass --root to the folder holding DVSGesture/"
                        "ibmGestureTrain and ibmGestureTest (tonic's layout), or add --download")
    files, labels = [], []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        for f in sorted(sub.glob("*.npy")):
            try:
                label = int(f.stem)
            except ValueError as err:
                raise DataError(f"{f}: expected a file named <label>.npy (0..{GESTURE_CLASSES - 1})") from err
            if not 0 <= label < GESTURE_CLASSES:
                raise DataError(f"{f}: label {label} outside 0..{GESTURE_CLASSES - 1}")
            files.append(f)
            labels.append(label)
    if not files:
        raise DataError(f"dvsgesture: no <user>_<lighting>/<label>.npy files under {folder}")
    keep = balanced_subset(np.asarray(labels), limit)
    return DVSFolder("dvsgesture", [files[i] for i in keep], np.asarray(labels)[keep], read_gesture_npy, size=size)


def load_cifar10_dvs(root: str | os.PathLike, *, split: str = "train", seed: int = 0, limit: Optional[int] = None,
                     download: bool = False, size: Optional[int] = 48) -> DVSFolder:
    """CIFAR10-DVS from a local folder (original ``.aedat`` or tonic's ``.aedat4``), 9:1 split."""
    if split not in ("train", "test", "all"):
        raise DataError(f"split={split!r} is invalid for cifar10dvs: expected 'train', 'test' or 'all'")
    root = Path(root)

    def scan() -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for base in (root, root / "CIFAR10DVS"):
            for k, c in enumerate(CIFAR10DVS_CLASSES):
                d = base / c
                if d.is_dir():
                    found = sorted(d.glob("*.aedat")) + sorted(d.glob("*.aedat4"))
                    files += found
                    labels += [k] * len(found)
            if files:
                break
        return files, labels

    files, labels = scan()
    if not files and download:
        import tonic

        tonic.datasets.CIFAR10DVS(save_to=str(root))
        files, labels = scan()
    if not files:
        raise DataError(f"cifar10dvs: no <class>/*.aedat or CIFAR10DVS/<class>/*.aedat4 under {root}; fix: pass "
                        "--root to the extracted release (class folders airplane ... truck), or add --download")
    lab = np.asarray(labels, dtype=np.int64)
    if split == "all":
        pool = np.arange(lab.size)
    else:
        is_test = stratified_split(lab, test_fraction=0.1, seed=seed)
        pool = np.flatnonzero(is_test if split == "test" else ~is_test)
    pool = pool[balanced_subset(lab[pool], limit)]
    readers = {".aedat": read_cifar10dvs_aedat, ".aedat4": read_cifar10dvs_aedat4}
    return DVSFolder("cifar10dvs", [files[i] for i in pool], lab[pool],
                     lambda f: readers[f.suffix](f), size=size)


__all__ = ["DVS_DATASETS", "DVSFolder", "read_gesture_npy", "read_cifar10dvs_aedat", "read_cifar10dvs_aedat4",
           "load_dvs_gesture", "load_cifar10_dvs"]
