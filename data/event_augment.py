"""Event-level augmentations against the generated-to-real domain gap (`flexsnn train
--event-augment`).

Each augmentation acts on one recording (:data:`~flexsnn.data.events.EVENT_DTYPE`, t in µs)
before it is binned, with its strength drawn per sample from ``rng``:

- ``drop``: drop a share ``U(0, drop_max)`` of the events (tonic ``drop_event_numpy``).
- ``jitter``: add ``N(0, jitter_us)`` to every timestamp, re-sort, drop negative times (tonic
  ``time_jitter_numpy``).
- ``skew``: ``t -> a * t + b`` with ``a ~ U(1 - skew, 1 + skew)``, ``b ~ U(0, skew_offset_us)``
  (tonic ``time_skew_numpy``). With T-bin slicing from the first to the last event a pure skew
  leaves the frames unchanged; it matters to consumers of raw time (the event-driven simulator).
- ``spatial``: move every event by a rounded ``N(0, spatial_sigma_px^2)`` in x and y; events
  leaving the sensor are dropped (own: tonic's version truncates toward zero and writes
  negative values into the integer fields).
- ``noise``: add ``U(0, noise_max) * n_events`` uniform events (tonic ``uniform_noise_numpy``).
- ``hot``: ``U{0..hot_max}`` random pixels fire ``U(hot_hz_min, hot_hz_max)`` Hz each, over
  the recording, random polarity (own; tonic only detects and removes hot pixels).

tonic's functions draw from NumPy's global generator; :func:`apply_event_augment` seeds it from
``rng`` for the call and restores it afterwards, so a seed fixes every draw. Inputs are never
modified.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from flexsnn.data.events import SensorSize
from flexsnn.errors import ConfigError

EVENT_AUGMENTS = ("drop", "jitter", "skew", "spatial", "noise", "hot")


@dataclass(frozen=True)
class EventAugment:
    """Which augmentations run (``names``, applied in :data:`EVENT_AUGMENTS` order) and their
    strengths (units in the names)."""

    names: tuple[str, ...] = ()
    drop_max: float = 0.3
    jitter_us: float = 2000.0
    skew: float = 0.1
    skew_offset_us: float = 5000.0
    spatial_sigma_px: float = 0.5
    noise_max: float = 0.05
    hot_max: int = 4
    hot_hz_min: float = 5.0
    hot_hz_max: float = 50.0

    def __post_init__(self) -> None:
        names = tuple(self.names)
        bad = [n for n in names if n not in EVENT_AUGMENTS]
        if bad:
            raise ConfigError("event_augment", bad[0], "one of " + ", ".join(EVENT_AUGMENTS),
                              "e.g. --event-augment drop,jitter,hot")
        object.__setattr__(self, "names", tuple(n for n in EVENT_AUGMENTS if n in names))
        checks = (("drop_max", 0 <= self.drop_max < 1, "in [0, 1)"),
                  ("jitter_us", self.jitter_us >= 0, ">= 0 µs"),
                  ("skew", 0 <= self.skew < 1, "in [0, 1)"),
                  ("skew_offset_us", self.skew_offset_us >= 0, ">= 0 µs"),
                  ("spatial_sigma_px", self.spatial_sigma_px >= 0, ">= 0 px"),
                  ("noise_max", self.noise_max >= 0, ">= 0 (share of the events)"),
                  ("hot_max", self.hot_max >= 0, "an integer >= 0 (pixels)"),
                  ("hot_hz_min", 0 <= self.hot_hz_min <= self.hot_hz_max, "in [0, hot_hz_max] Hz"))
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"event_augment.{name}", getattr(self, name), expected)

    def __bool__(self) -> bool:
        return bool(self.names)


def parse_event_augment(spec: str | tuple[str, ...] | list[str] | None) -> EventAugment:
    """``"drop,jitter"`` (or a sequence of names, ``"all"``, ``""``/None = none) -> EventAugment."""
    if spec is None:
        return EventAugment()
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = tuple(spec)
    if names == ("all",):
        names = EVENT_AUGMENTS
    return EventAugment(names=names)


@contextlib.contextmanager
def _seeded_global_numpy(rng: np.random.Generator) -> Iterator[None]:
    """Seed NumPy's global generator (what tonic draws from) from ``rng``; restore it after."""
    state = np.random.get_state()
    np.random.seed(int(rng.integers(0, 2**32 - 1)))
    try:
        yield
    finally:
        np.random.set_state(state)


def _spatial(events: np.ndarray, sensor: SensorSize, sigma: float, rng: np.random.Generator) -> np.ndarray:
    dx = np.rint(rng.normal(0.0, sigma, events.size)).astype(np.int64)
    dy = np.rint(rng.normal(0.0, sigma, events.size)).astype(np.int64)
    x = events["x"].astype(np.int64) + dx
    y = events["y"].astype(np.int64) + dy
    keep = (x >= 0) & (x < sensor.width) & (y >= 0) & (y < sensor.height)
    out = events[keep].copy()
    out["x"], out["y"] = x[keep], y[keep]
    return out


def _hot(events: np.ndarray, sensor: SensorSize, aug: EventAugment, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(0, aug.hot_max + 1))
    if k == 0 or events.size == 0:
        return events
    t0, t1 = int(events["t"][0]), int(events["t"][-1])
    pix = rng.choice(sensor.width * sensor.height, k, replace=False)
    rates = rng.uniform(aug.hot_hz_min, aug.hot_hz_max, k)
    counts = rng.poisson(rates * (t1 - t0) * 1e-6)
    n = int(counts.sum())
    hot = np.empty(n, dtype=events.dtype)
    where = np.repeat(pix, counts)
    hot["x"], hot["y"] = where % sensor.width, where // sensor.width
    hot["p"] = rng.integers(0, sensor.polarities, n)
    hot["t"] = rng.integers(t0, t1 + 1, n)
    out = np.concatenate([events, hot])
    return out[np.argsort(out["t"], kind="stable")]


def apply_event_augment(events: np.ndarray, sensor: SensorSize, aug: EventAugment,
                        rng: np.random.Generator) -> np.ndarray:
    """The augmented copy of ``events`` (sorted by t); see the module docstring."""
    import tonic.functional as F

    out = np.array(events, copy=True)
    if not aug or out.size == 0:
        return out
    sensor = SensorSize(*sensor)
    with _seeded_global_numpy(rng):
        if "drop" in aug.names:
            out = F.drop_event_numpy(out, float(rng.uniform(0.0, aug.drop_max)))
        if "jitter" in aug.names and out.size:
            t = out["t"].astype(np.float64)
            tmp = np.empty(out.size, dtype=[("t", np.float64)])
            tmp["t"] = t
            tmp = F.time_jitter_numpy(tmp, std=aug.jitter_us)
            out["t"] = np.rint(tmp["t"]).astype(np.int64)
            out = out[out["t"] >= 0]
            out = out[np.argsort(out["t"], kind="stable")]
        if "skew" in aug.names and out.size:
            tmp = np.empty(out.size, dtype=[("t", np.float64)])
            tmp["t"] = out["t"]
            tmp = F.time_skew_numpy(tmp, coefficient=(1 - aug.skew, 1 + aug.skew),
                                    offset=(0.0, aug.skew_offset_us))
            out["t"] = np.rint(tmp["t"]).astype(np.int64)
        if "spatial" in aug.names and out.size:
            out = _spatial(out, sensor, aug.spatial_sigma_px, rng)
        if "noise" in aug.names and out.size:
            n = int(round(rng.uniform(0.0, aug.noise_max) * out.size))
            if n:
                out = F.uniform_noise_numpy(out, tuple(sensor), n)
                out = out[np.argsort(out["t"], kind="stable")]
        if "hot" in aug.names:
            out = _hot(out, sensor, aug, rng)
    return out
