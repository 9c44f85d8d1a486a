"""Event-level augmentations (pure functions; inputs are never modified).

The frame loader applies the same flips and shifts to binned frames (cheaper, and the bin edges
stay those of the original recording); these versions are for code that consumes raw events,
such as the event-driven simulator.
"""

from __future__ import annotations

import numpy as np

from flexsnn.data.events import SensorSize


def flip_events_x(events: np.ndarray, sensor: SensorSize) -> np.ndarray:
    """Horizontal flip: ``x -> width - 1 - x``."""
    out = events.copy()
    out["x"] = sensor.width - 1 - events["x"]
    return out


def shift_events(events: np.ndarray, sensor: SensorSize, dx: int, dy: int) -> np.ndarray:
    """Shift by ``dx`` columns and ``dy`` rows; events that leave the sensor are dropped."""
    x = events["x"].astype(np.int64) + dx
    y = events["y"].astype(np.int64) + dy
    keep = (x >= 0) & (x < sensor.width) & (y >= 0) & (y < sensor.height)
    out = events[keep].copy()
    out["x"], out["y"] = x[keep], y[keep]
    return out


def random_flip_shift(events: np.ndarray, sensor: SensorSize, rng: np.random.Generator, *,
                      flip_p: float = 0.5, max_shift: int = 2) -> np.ndarray:
    """Flip with probability ``flip_p``, then shift by integers drawn from
    ``[-max_shift, max_shift]`` (the same draws, in the same order, as
    :func:`flexsnn.data.frames.augment_frames`)."""
    flip = rng.random() < flip_p
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    out = flip_events_x(events, sensor) if flip else events
    return shift_events(out, sensor, dx, dy) if (dx or dy) else out.copy()
