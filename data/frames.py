"""Events -> frames, and the torch path from an event dataset to training batches.

- :func:`events_to_frames`: ``[T, C, H, W]`` float32 counts (or 0/1), exactly equal to
  ``tonic.transforms.ToFrame(sensor_size, n_time_bins=T)`` on non-empty input.
- :func:`to_time_major`: ``[B, T, ...]`` -> ``[T, B, ...]`` (flexsnn's time-first layout).
- :class:`FrameDataset` / :func:`frame_loader`: batches ``(x [B, T, C, H, W] float32,
  y [B] int64)`` with optional seeded augmentation (horizontal flip, small shifts).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from flexsnn.data.events import SensorSize, validate_events
from flexsnn.errors import ConfigError
from flexsnn.seeding import numpy_rng

if TYPE_CHECKING:  # pragma: no cover
    import torch

FRAME_MODES = ("count", "binary")


def time_bin_index(t: np.ndarray, n_time_bins: int) -> np.ndarray:
    """Bin index of each timestamp as ``tonic`` slices by ``n_time_bins`` (overlap 0).

    ``t`` (int µs, sorted) spans ``[t[0], t[-1]]``; the window length is
    ``w = (t[-1] - t[0]) // n_time_bins`` (integer floor) and bin ``i`` holds
    ``t[0] + i*w <= t < t[0] + (i+1)*w``. Events at or after ``t[0] + n_time_bins*w``
    (the remainder of the floor division, including the last event when it divides evenly)
    get index ``n_time_bins``, i.e. they fall outside every frame, as in tonic. When the
    recording is shorter than ``n_time_bins`` µs (``w == 0``) every index is ``n_time_bins``.
    """
    t = np.asarray(t, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    window = (int(t[-1]) - int(t[0])) // n_time_bins
    if window <= 0:
        return np.full(t.size, n_time_bins, dtype=np.int64)
    return np.minimum((t - t[0]) // window, n_time_bins)


def events_to_frames(events: np.ndarray, sensor: SensorSize | Sequence[int], n_time_bins: int,
                     *, mode: str = "count") -> np.ndarray:
    """Bin events into ``n_time_bins`` frames.

    Args:
        events: structured array with fields x, y, p, t (t in µs, sorted by t).
        sensor: ``(width, height, polarities)``.
        n_time_bins: T >= 1.
        mode: ``"count"`` (events per pixel, polarity and bin) or ``"binary"`` (1 where >= 1).

    Returns:
        float32 array ``[T, C, H, W]`` with ``C = polarities`` (channel = polarity: 0 OFF, 1 ON).

    Agreement with tonic: equals ``ToFrame(sensor_size=sensor, n_time_bins=T)(events)`` (cast to
    float32) for every non-empty input, including tonic's slicing rules (see
    :func:`time_bin_index`: events past the last whole window are dropped, and a recording
    shorter than T µs gives all-zero frames). Differences, on purpose:

    - empty input gives zeros of shape ``[T, C, H, W]`` (tonic returns ``(T, P, W, H)`` there,
      a different layout from its non-empty result);
    - with a 1-polarity sensor all events go to channel 0 (tonic raises when both polarities
      occur, and overwrites the caller's ``p`` otherwise); the input is never modified.
    """
    width, height, polarities = (int(v) for v in sensor)
    if n_time_bins < 1:
        raise ConfigError("n_time_bins", n_time_bins, "an integer >= 1")
    if mode not in FRAME_MODES:
        raise ConfigError("mode", mode, "one of " + ", ".join(FRAME_MODES))
    size = n_time_bins * polarities * height * width
    if events.size == 0:
        return np.zeros((n_time_bins, polarities, height, width), dtype=np.float32)
    b = time_bin_index(events["t"], n_time_bins)
    keep = b < n_time_bins
    p = events["p"].astype(np.int64) if polarities > 1 else 0
    flat = ((b * polarities + p) * height + events["y"].astype(np.int64)) * width \
        + events["x"].astype(np.int64)
    counts = np.bincount(flat[keep], minlength=size)
    frames = counts.astype(np.float32).reshape(n_time_bins, polarities, height, width)
    if mode == "binary":
        np.minimum(frames, 1.0, out=frames)
    return frames


def to_time_major(x):
    """``[B, T, ...]`` -> ``[T, B, ...]`` (torch tensor: contiguous copy; numpy: view)."""
    if isinstance(x, np.ndarray):
        return np.swapaxes(x, 0, 1)
    return x.transpose(0, 1).contiguous()


class EventDataset(Protocol):
    """What :func:`flexsnn.data.registry.load_event_dataset` returns: a sequence of
    ``(events, label)`` with ``.sensor``, ``.labels`` (int64 [N]) and ``.name``."""

    sensor: SensorSize
    labels: np.ndarray
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True)
class Augment:
    """Event-data augmentation applied to the binned frames (so bin edges stay those of the
    original recording).

    - ``flip_p``: probability of a horizontal flip (x -> W-1-x).
    - ``max_shift``: shift by integers dx, dy drawn uniformly from ``[-max_shift, max_shift]``
      pixels; events leaving the sensor are dropped (zero fill).
    """

    flip_p: float = 0.5
    max_shift: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_p <= 1.0:
            raise ConfigError("augment.flip_p", self.flip_p, "a probability in [0, 1]")
        if self.max_shift < 0:
            raise ConfigError("augment.max_shift", self.max_shift, "an integer >= 0 (pixels)")


def shift_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift ``[..., H, W]`` frames by ``dx`` columns and ``dy`` rows, filling with zeros."""
    out = np.zeros_like(frames)
    h, w = frames.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[..., dst_y, dst_x] = frames[..., src_y, src_x]
    return out


def augment_frames(frames: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    """Apply ``augment`` to ``[T, C, H, W]`` frames with draws from ``rng`` (returns a new array)."""
    flip = rng.random() < augment.flip_p
    dx, dy = (int(v) for v in rng.integers(-augment.max_shift, augment.max_shift + 1, size=2))
    out = frames[..., ::-1] if flip else frames
    if dx or dy:
        out = shift_frames(out, dx, dy)
    return np.ascontiguousarray(out)


#: un-augmented frames shared by every FrameDataset over the same event dataset and T:
#: ``{event_dataset: {T: _FrameCache}}`` (entries vanish with the event dataset).
_SHARED_CACHES: "weakref.WeakKeyDictionary[Any, dict[int, _FrameCache]]" = weakref.WeakKeyDictionary()


class _FrameCache:
    """int16 count frames per sample index, up to ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.frames: dict[int, np.ndarray] = {}
        self.nbytes = 0
        self.limit_bytes = limit_bytes

    def put(self, index: int, frames: np.ndarray) -> None:
        size = frames.size * 2
        if index in self.frames or self.nbytes + size > self.limit_bytes:
            return
        if frames.max(initial=0) <= np.iinfo(np.int16).max:
            self.frames[index] = frames.astype(np.int16)
            self.nbytes += size


def _shared_cache(events: Any, T: int, limit_bytes: int) -> _FrameCache:
    try:
        per_dataset = _SHARED_CACHES.setdefault(events, {})
    except TypeError:  # not weak-referenceable / hashable: private cache
        return _FrameCache(limit_bytes)
    return per_dataset.setdefault(T, _FrameCache(limit_bytes))


class FrameDataset:
    """A torch-style dataset of frames from an event dataset.

    ``ds[i]`` returns ``(x, y)``: ``x`` float32 tensor ``[T, C, H, W]``, ``y`` int64 scalar tensor.
    Frames of the un-augmented recording are cached in memory (as int16 counts, up to
    ``cache_mb`` MiB), shared by all FrameDatasets over the same event dataset and ``T``, so
    later epochs (and new loaders) skip reading and binning. Each recording is checked with
    :func:`~flexsnn.data.events.validate_events` when first binned.

    Augmentation draws come from ``numpy_rng(seed, index, k)`` where ``k`` counts how often
    sample ``index`` was fetched, so a fixed sequence of accesses gives the same batches.
    """

    def __init__(self, events: EventDataset, *, T: int, mode: str = "count",
                 augment: bool | Augment = False, seed: int = 0, cache_mb: float = 512.0) -> None:
        if T < 1:
            raise ConfigError("T", T, "an integer >= 1 (time bins)")
        if mode not in FRAME_MODES:
            raise ConfigError("mode", mode, "one of " + ", ".join(FRAME_MODES))
        self.events = events
        self.T = int(T)
        self.mode = mode
        self.augment: Augment | None = (Augment() if augment is True
                                        else (augment or None))
        self.seed = seed
        self.sensor = SensorSize(*events.sensor)
        self._cache = _shared_cache(events, self.T, int(cache_mb * 2**20))
        self._draws: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.events)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.events.labels, dtype=np.int64)

    def frames(self, index: int) -> tuple[np.ndarray, int]:
        """Un-augmented ``[T, C, H, W]`` float32 frames and the label of sample ``index``."""
        cached = self._cache.frames.get(index)
        label = int(self.events.labels[index])
        if cached is not None:
            frames = cached.astype(np.float32)
        else:
            ev, label = self.events[index]
            validate_events(ev, self.sensor, source=f"{getattr(self.events, 'name', 'events')}"
                                                    f"[{index}]")
            frames = events_to_frames(ev, self.sensor, self.T, mode="count")
            self._cache.put(index, frames)
        if self.mode == "binary":
            np.minimum(frames, 1.0, out=frames)
        return frames, label

    def __getitem__(self, index: int):
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        frames, label = self.frames(index)
        if self.augment is not None:
            k = self._draws.get(index, 0)
            self._draws[index] = k + 1
            frames = augment_frames(frames, self.augment, numpy_rng(self.seed, index, k))
        return torch.from_numpy(frames), torch.tensor(label, dtype=torch.int64)


class PrefixFrames:
    """The first ``T`` frames of every sample of a :class:`FrameDataset` (binned at its own,
    larger T): the MTT paper's evaluation at T' < T. ``ds[i]`` -> ``(x [T, C, H, W], y)``."""

    def __init__(self, frames: FrameDataset, T: int) -> None:
        if not 1 <= int(T) <= frames.T:
            raise ConfigError("T", T, f"1..{frames.T} (the frames binned per recording)")
        self.base = frames
        self.T = int(T)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    def __getitem__(self, index: int):
        x, y = self.base[index]
        return x[: self.T].contiguous(), y


def frame_loader(event_dataset: EventDataset, *, T: int, batch_size: int, shuffle: bool,
                 augment: bool | Augment = False, seed: int = 0, drop_last: bool = False,
                 mode: str = "count", **loader_kwargs: Any) -> "torch.utils.data.DataLoader":
    """A DataLoader over ``event_dataset`` yielding ``(x, y)``: ``x`` float32
    ``[B, T, C, H, W]`` (event counts per bin), ``y`` int64 ``[B]``.

    Shuffling uses ``torch_generator(seed)``; augmentation (``True`` = :class:`Augment`
    defaults) is seeded by ``seed`` too. Use :func:`to_time_major` to get ``[T, B, C, H, W]``.
    ``loader_kwargs`` go to ``torch.utils.data.DataLoader`` (default ``num_workers=0``).
    A :class:`FrameDataset` can be passed instead of an event dataset to reuse its frame cache.
    """
    from torch.utils.data import DataLoader

    from flexsnn.seeding import torch_generator

    if batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    if isinstance(event_dataset, FrameDataset):
        ds = event_dataset
        if ds.T != T:
            raise ConfigError("T", T, f"the FrameDataset's T ({ds.T})")
    else:
        ds = FrameDataset(event_dataset, T=T, mode=mode, augment=augment, seed=seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=torch_generator(seed) if shuffle else None, **loader_kwargs)
