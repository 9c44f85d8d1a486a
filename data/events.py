"""The one event representation of flexsnn.

Events are a NumPy structured array of dtype :data:`EVENT_DTYPE` with fields

- ``x`` (int16, column, 0 .. width-1), ``y`` (int16, row, 0 .. height-1),
- ``p`` (uint8 polarity: 1 = ON, 0 = OFF),
- ``t`` (int64 timestamp in microseconds, non-decreasing),

together with a :class:`SensorSize` ``(width, height, polarities)`` (tonic's convention, so
``tonic.transforms`` accept our arrays unchanged). Nothing indexes event columns by position.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flexsnn.errors import EventFormatError

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("p", np.uint8), ("t", np.int64)])


class SensorSize(NamedTuple):
    """Sensor geometry: ``width`` (x extent), ``height`` (y extent), ``polarities``."""

    width: int
    height: int
    polarities: int


NMNIST_SENSOR = SensorSize(34, 34, 2)


def make_events(x, y, p, t) -> np.ndarray:
    """Build an :data:`EVENT_DTYPE` array from four equal-length sequences (t in µs)."""
    x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
    if not (x.shape == y.shape == p.shape == t.shape) or x.ndim != 1:
        raise EventFormatError(
            f"x, y, p, t must be 1-D and equally long, got shapes {x.shape}, {y.shape}, "
            f"{p.shape}, {t.shape}"
        )
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"], events["t"] = x, y, p, t
    return events


def empty_events() -> np.ndarray:
    """A zero-length event array."""
    return np.empty(0, dtype=EVENT_DTYPE)


def validate_events(events: np.ndarray, sensor: SensorSize, *, source: str = "<events>") -> np.ndarray:
    """Check ``events`` against the format and ``sensor``; return them unchanged.

    Rules: dtype is :data:`EVENT_DTYPE` (same field names and types), 1-D,
    ``0 <= x < width``, ``0 <= y < height``, ``p in {0, 1}`` (and ``p < polarities``),
    ``t`` non-decreasing and ``>= 0``.

    Raises:
        EventFormatError: naming ``source``, the field, the first bad index and its value.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise EventFormatError(
            f"expected a structured array of dtype {EVENT_DTYPE}, got {type(events).__name__}"
            f"{' of dtype ' + str(events.dtype) if isinstance(events, np.ndarray) else ''}; "
            "build one with flexsnn.data.make_events",
            source=source, field="dtype",
        )
    if events.dtype != EVENT_DTYPE:
        raise EventFormatError(
            f"dtype {events.dtype} differs from {EVENT_DTYPE}; convert with "
            "flexsnn.data.make_events(ev['x'], ev['y'], ev['p'], ev['t'])",
            source=source, field="dtype",
        )
    if events.ndim != 1:
        raise EventFormatError(f"events must be 1-D, got shape {events.shape}", source=source)
    if events.size == 0:
        return events
    checks = (
        ("x", (events["x"] < 0) | (events["x"] >= sensor.width), f"outside 0..{sensor.width - 1}"),
        ("y", (events["y"] < 0) | (events["y"] >= sensor.height), f"outside 0..{sensor.height - 1}"),
        ("p", (events["p"] > 1) | (events["p"] >= max(sensor.polarities, 1)),
         f"polarity must be 0 or 1 (and < {sensor.polarities} polarities)"),
        ("t", events["t"] < 0, "timestamps must be >= 0 µs"),
    )
    for field, bad, reason in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EventFormatError(reason, source=source, field=field, index=i,
                                   value=int(events[field][i]))
    steps = np.diff(events["t"])
    if (steps < 0).any():
        i = int(np.flatnonzero(steps < 0)[0]) + 1
        raise EventFormatError(
            f"timestamps must be non-decreasing (t[{i - 1}] = {int(events['t'][i - 1])} µs); "
            "sort with events[np.argsort(events['t'], kind='stable')]",
            source=source, field="t", index=i, value=int(events["t"][i]),
        )
    return events
