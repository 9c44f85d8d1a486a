"""A study renderer: recordings of new images assembled from real recordings' events, pixel by
pixel (a collage).

The learned renderer (:mod:`flexsnn.data.learned_dvs`) draws events from expected rates; a
classifier still tells its recordings from real ones (issue 16's C2ST, 0.84). Version 8's
donor hybrids (``docs/sim_to_real.md``) suggested what it lacks: a real pixel's events, taken
from *another* recording at the *same sensor pixel* where the expected profile is alike, scored
0.556; moved one pixel away, 0.99. This renderer builds whole recordings that way, given real
recordings of known images (``donors``):

1. The learned renderer's expected events of the new image and of every donor image
   (``[2, n_bins, 34, 34]``) are compared as square roots; the ``nearest`` donors by the whole
   map are the image's *donor set*.
2. Every pixel takes all its events from the donor of that set whose expected profile at that
   pixel is nearest (the same sensor pixel: a pixel's fixed pattern travels with it).
3. Optionally (``background_events`` > 0; off by default, since it measured no gain: C2ST
   0.605 against 0.609 without), the pixels expected to fire less than that take their events
   from one donor drawn at random for the whole recording, where that donor's image is
   background too.
4. A donor's times are scaled to the duration of the image's nearest donor.

A donor whose source image is the new image itself is left out (by default, found by identical
pixels), so a recording is never its own real counterpart. ``benchmarks/c2st_collage.py``
measures it against real recordings held out of the donors (``docs/sim_to_real.md``, "A collage
of real recordings' events"): with the donors kept apart from the C2ST classifier's recordings
its CNN scores 0.53 (the learned renderer 0.80), but only by a shortcut (the classifier memorizes
donors' sequences), and the time profile alone finds it at 0.69-0.78; a model trained on it
transfers no better, and it needs real recordings at generation time. A study, not a renderer
of the library.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from flexsnn.data.events import EVENT_DTYPE
from flexsnn.errors import ConfigError, DataError
from flexsnn.progress import ProgressFactory

SIZE = 34


def _image_key(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.float32).tobytes()).digest()


class CollageRenderer:
    """Render ``[28, 28]`` images as recordings made of the ``donors``' events.

    Args:
        donors: real recordings (:data:`EVENT_DTYPE`, the 34x34 N-MNIST sensor, t in µs).
        donor_images: ``[F, 28, 28]`` their source images in [0, 1], in the same order.
        nearest: size of each image's donor set (1: its nearest donor's recording, with the
            background of another).
        background_events: expected events per pixel (both polarities, whole recording) below
            which a pixel counts as background and takes its events from one random donor per
            recording (0: no such rule, every pixel from the nearest donor of its set).
        model: the learned renderer whose expected events are compared (default: the shipped one).
        donor_rates: ``model.rates(donor_images)`` when the caller has them already.

    Attributes: ``donor_background`` ``[F, 34 * 34]`` bool, where each donor's image is background.
    """

    def __init__(self, donors: Sequence[np.ndarray], donor_images: np.ndarray, *, nearest: int = 10,
                 background_events: float = 0.0, model=None, donor_rates: np.ndarray | None = None) -> None:
        from flexsnn.data.learned_dvs import load_learned_dvs

        donor_images = np.asarray(donor_images, dtype=np.float32)
        if donor_images.ndim != 3 or donor_images.shape[1:] != (28, 28) or len(donor_images) != len(donors):
            raise ConfigError("donor_images", donor_images.shape, f"[{len(donors)}, 28, 28], one per donor",
                              "pass each donor recording's MNIST source image, in the donors' order")
        if not 1 <= nearest < len(donors):
            raise ConfigError("nearest", nearest, f"1 .. {len(donors) - 1} (one fewer than the {len(donors)} "
                              "donors, so that an image's own recording can be left out)",
                              "pass more donors or a smaller set size")
        if background_events < 0:
            raise ConfigError("background_events", background_events, ">= 0", "e.g. 0.3")
        for j, rec in enumerate(donors):
            if rec.dtype != EVENT_DTYPE:
                raise DataError(f"donor {j}: dtype {rec.dtype}; expected {EVENT_DTYPE} "
                                "(read recordings with flexsnn.data.nmnist.read_bin)")
            inside = not len(rec) or (max(rec["x"].max(), rec["y"].max()) < SIZE
                                      and min(rec["x"].min(), rec["y"].min()) >= 0)
            if not inside:
                raise DataError(f"donor {j}: events outside the {SIZE}x{SIZE} sensor; the collage "
                                "copies events pixel by pixel and needs N-MNIST recordings")
        self.model = model if model is not None else load_learned_dvs()
        self.nearest = nearest
        self.background_events = background_events
        self.donors = list(donors)
        self._own = {_image_key(im): j for j, im in enumerate(donor_images)}
        self._pixel = [r["y"].astype(np.int64) * SIZE + r["x"] for r in self.donors]
        self._duration = np.array([max(int(r["t"].max()), 1) if len(r) else 1 for r in self.donors], np.float64)
        rates = self.model.rates(donor_images) if donor_rates is None else donor_rates  # [F, 2, n_bins, 34, 34]
        self._profile = self._profiles(rates)  # [F, D, P]
        self.donor_background = rates.sum((1, 2)).reshape(len(donors), -1) < background_events  # [F, P]

    @staticmethod
    def _profiles(rates: np.ndarray) -> np.ndarray:
        """``[N, 2 * n_bins, 34 * 34]`` float32 square roots of expected events."""
        return np.sqrt(rates).reshape(len(rates), -1, SIZE * SIZE).astype(np.float32)

    def donor_map(self, images: np.ndarray, *, seed: int, exclude: np.ndarray | None = None,
                  first_index: int = 0, sets: np.ndarray | None = None,
                  rates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 34 * 34]`` the donor of every pixel of every image (pixel ``y * 34 + x``), and
        ``[N]`` the duration (µs) each recording takes: that of the image's nearest donor.

        ``exclude`` ``[N]``: a donor index that image ``i`` must not use (its own recording), or -1.
        Image ``i``'s random choices come from ``default_rng([seed, first_index + i])``.
        ``sets`` ``[N, nearest]``: donor sets to use instead of the nearest (for ablations).
        ``rates``: ``model.rates(images)`` when the caller has them already.
        """
        import torch

        images = np.asarray(images, dtype=np.float32)
        n, n_donors = len(images), len(self.donors)
        exclude = np.full(n, -1) if exclude is None else np.asarray(exclude)
        if exclude.shape != (n,) or exclude.max(initial=-1) >= n_donors:
            raise ConfigError("exclude", exclude.shape, f"[{n}] donor indices below {n_donors}, or -1",
                              "give one index (or -1) per image")
        rates = self.model.rates(images) if rates is None else rates
        profile = self._profiles(rates)
        background = rates.sum((1, 2)).reshape(n, -1) < self.background_events  # [N, P]
        donors = torch.from_numpy(self._profile)
        whole = torch.cdist(torch.from_numpy(profile.reshape(n, -1)), donors.reshape(n_donors, -1))
        own = np.flatnonzero(exclude >= 0)
        whole[own, exclude[own]] = float("inf")
        near = whole.topk(self.nearest, largest=False).indices.numpy() if sets is None else np.asarray(sets)
        out = np.empty((n, SIZE * SIZE), np.int64)
        for i in range(n):
            gap = ((donors[near[i]] - torch.from_numpy(profile[i])[None]) ** 2).sum(1)  # [M, P]
            out[i] = near[i][gap.argmin(0).numpy()]
            bg = np.flatnonzero(background[i])
            if bg.size == 0:  # always so without the background option
                continue
            rng = np.random.default_rng([seed, first_index + i])
            order = rng.permutation(n_donors)
            order = order[order != exclude[i]]
            usable = self.donor_background[np.ix_(order, bg)]  # [F', B]
            first = usable.argmax(0)
            out[i, bg] = np.where(usable.any(0), order[first], out[i, bg])
        return out, self._duration[near[:, 0]]

    def assemble(self, donor_map: np.ndarray, duration_us: np.ndarray) -> list[np.ndarray]:
        """Recordings (sorted by t) whose pixel ``p`` holds donor ``donor_map[i, p]``'s events
        there, times scaled to ``duration_us[i]``."""
        out = []
        for row, target in zip(donor_map, duration_us):
            parts = []
            for j in np.unique(row):
                take = row[self._pixel[j]] == j
                e = self.donors[j][take]
                t = np.round(e["t"].astype(np.float64) * (target / self._duration[j]))
                e = e.copy()
                e["t"] = t.astype(np.int64)
                parts.append(e)
            rec = np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)
            out.append(rec[np.argsort(rec["t"], kind="stable")])
        return out

    def own_recordings(self, images: np.ndarray) -> np.ndarray:
        """``[N]`` the donor whose source image has the same pixels as each image, or -1."""
        return np.array([self._own.get(_image_key(im), -1) for im in np.asarray(images, np.float32)], np.int64)

    def render(self, images: np.ndarray, *, seed: int = 0, exclude: np.ndarray | None = None,
               batch: int = 256, progress: ProgressFactory | None = None) -> list[np.ndarray]:
        """One recording per ``[N, 28, 28]`` image in [0, 1]; images are processed ``batch`` at a
        time (memory: ``batch`` x the donors' maps). ``exclude`` (see :meth:`donor_map`) defaults
        to :meth:`own_recordings`: an image never takes its own real recording."""
        from flexsnn.progress import null_progress

        images = np.asarray(images, dtype=np.float32)
        exclude = self.own_recordings(images) if exclude is None else np.asarray(exclude)
        out: list[np.ndarray] = []
        bar = (progress or null_progress)(total=len(images), desc="collage")
        for start in range(0, len(images), batch):
            sl = slice(start, start + batch)
            dmap, duration = self.donor_map(images[sl], seed=seed, exclude=exclude[sl], first_index=start)
            out.extend(self.assemble(dmap, duration))
            bar.update(len(dmap))
        bar.close()
        return out
