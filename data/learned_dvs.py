"""A learned image-to-events model of the N-MNIST recordings (saccade-mnist's ``renderer="learned"``).

The physical renderer (:mod:`flexsnn.data.saccade`) simulates the moving digit and a DVS pixel
model; a classifier still tells its recordings from real ones every time (issue 16's C2ST). This
renderer is fitted instead, on real N-MNIST recordings paired with their MNIST source images
(``benchmarks/fit_learned_dvs.py``), in two parts:

1. **Rates.** A two-layer CNN maps the ``[28, 28]`` image (zero-padded to ``[40, 40]``) to the
   expected events per pixel, polarity and bin of the recording's normalized time
   (``t / duration``, ``n_bins`` bins)::

       rate[p, k, y, x] = exp(conv2(relu(conv1(image)))[p, k, y, x] + gain[p, y, x])
                          + exp(noise[p, y, x] + noise_t[k])

   ``gain`` is the sensor's per-pixel sensitivity (fixed pattern), ``noise`` its per-pixel
   background rate (hot pixels). Fitted by Poisson likelihood; layout ``[2, n_bins, 34, 34]``.
2. **Sampling**, with moments fitted on the same recordings: a recording's rates are scaled by
   a smooth random field (``field_sigma``, correlation ``field_scale_px``, shared by both
   polarities: the real count images' residuals correlate between neighbours and between ON and
   OFF) and a global gain (``gain_sigma``); each pixel and polarity then fires as a renewal
   process in its integrated rate with Gamma(``renewal_shape``) intervals: shape 1 is Poisson,
   larger shapes fire more regularly, as a DVS pixel crossing its threshold does (real counts
   vary about 0.2x their mean, Poisson's 1x). The recording lasts
   ``duration_mean_us +- duration_std_us``; its last event is at that time, as in the real files.
3. **Time gain** (optional array ``time_factor``, ``[2 * n_bins, r]``): a recording's rates in
   bin ``k`` and polarity ``p`` are also scaled by ``exp(z[p, k] - var/2)``, ``z = time_factor @
   N(0, I_r)``. Real recordings vary from one to the next in how many events fall between
   saccades and at their edges, jointly in neighbouring bins and in both polarities; the
   covariance of ``z`` is the real recordings' covariance of per-bin log totals less that of
   recordings generated without it (``benchmarks/fit_learned_dvs.py``).
   **Sensor patterns** (optional arrays ``noise_pt`` and ``gain_pt``, ``[2, n_bins, 34, 34]``):
   the sensor's background and sensitivity also change with the time in the recording, pixel by
   pixel, the same in every recording (``benchmarks/c2st_background.py`` found the noise's
   timing to be such a fixed pattern)::

       rate[p, k, y, x] = signal[p, k, y, x] * exp(gain_pt[p, k, y, x])
                          + exp(noise[p, y, x] + noise_t[k] + noise_pt[p, k, y, x])

   fitted by Poisson likelihood with the CNN fixed, with an L2 penalty.
   **Background apart** (``noise_shape`` set; version 8): the background part of the rates,
   ``exp(noise + noise_t + noise_pt)``, which does not depend on the image, is drawn as its own
   renewal process of that shape (1: Poisson), and only the signal part fires regularly and in
   bursts. Drawn together, the sensor's noise fired as regularly as an edge and was gathered
   into the edges' bursts.
4. **Bursts** (``burst_size`` > 1): a DVS pixel that an edge crosses fires its events in quick
   succession, while the rates, averaged over recordings whose timing differs by a few ms, spread
   them over 10-20 ms. So a pixel's events in one saccade (between the pauses at normalized times
   ``pause1_at`` and ``pause2_at``) are gathered into ``ceil(n / burst_size)`` bursts: each burst
   sits at the time of one of those events, chosen at random (so the expected time profile is
   kept), and its other events scatter about it with a standard deviation of
   ``burst_spread_us``. Counts are unchanged; where the events fall is not: real frames at
   T = 10 hold fewer single-event pixels, and a pixel's count moves between neighbouring frames
   as a whole.
   **Trains** (``burst_interval_us`` set; version 9): a burst's events follow one another at
   Gamma(``burst_interval_shape``) intervals of mean ``burst_interval_us``, centred on the lead's
   time, instead of scattering about it: a real pixel that an edge crosses fires a train at
   2-4 ms intervals and almost never twice within 1.5 ms, where followers scattered by 148 µs put
   22 % of a pixel's intervals under 250 µs (real: 0.2 %).

The parameters live in one ``.npz`` (read with ``allow_pickle=False``); :func:`weights_digest`
goes into the dataset cache key, so a refit regenerates caches.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexsnn.data.events import EVENT_DTYPE
from flexsnn.errors import DataError

#: The fitted parameters shipped with flexsnn.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "assets" / "learned_dvs.npz"
SIZE = 34
IMAGE_PAD = 6  # [28, 28] -> [40, 40]; conv2's 7x7 valid window brings it to [34, 34]
ARRAYS = ("conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias", "gain", "noise", "noise_t")
#: Arrays a model may lack (older fits): the sampler then leaves that part out.
OPTIONAL_ARRAYS = ("time_factor", "noise_pt", "gain_pt")
#: The optional per-pixel-and-bin sensor patterns (``[2, n_bins, 34, 34]``, log factors).
PATTERNS = ("noise_pt", "gain_pt")


@dataclass(frozen=True)
class SamplerParams:
    """The sampling part (units in the names); see the module docstring."""

    renewal_shape: float = 11.0
    field_sigma: float = 0.107
    field_scale_px: float = 0.72
    gain_sigma: float = 0.025
    duration_mean_us: float = 307_800.0
    duration_std_us: float = 2_700.0
    burst_size: float = 1.0
    burst_spread_us: float = 0.0
    pause1_at: float = 0.304
    pause2_at: float = 0.720
    noise_shape: float | None = None  # None: the background fires with the signal (before version 8)
    burst_interval_us: float | None = None  # None: followers scatter by burst_spread_us (before version 9)
    burst_interval_shape: float = 8.0

    def check(self, source: str) -> None:
        """Raise :class:`DataError` naming ``source`` and the field when a value is out of range."""
        limits = {"renewal_shape": (0.1, 1000.0), "field_sigma": (0.0, 2.0),
                  "field_scale_px": (0.0, 10.0), "gain_sigma": (0.0, 2.0),
                  "duration_mean_us": (1.0, 1e8), "duration_std_us": (0.0, 1e7),
                  "burst_size": (1.0, 100.0), "burst_spread_us": (0.0, 1e5),
                  "pause1_at": (0.0, 1.0), "pause2_at": (0.0, 1.0)}
        if self.noise_shape is not None:
            limits["noise_shape"] = (0.1, 1000.0)
        if self.burst_interval_us is not None:
            limits |= {"burst_interval_us": (1.0, 1e5), "burst_interval_shape": (0.1, 1000.0)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not (np.isfinite(value) and lo <= value <= hi):
                raise DataError(f"{source}: sampler.{name} = {value!r} is outside [{lo}, {hi}]; "
                                "refit with benchmarks/fit_learned_dvs.py")


@functools.lru_cache(maxsize=4)
def weights_digest(path: Path = DEFAULT_WEIGHTS) -> str:
    """First 16 hex digits of the weights file's SHA-256."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise DataError(f"cannot read the learned DVS model {path}: {err}; reinstall flexsnn or "
                        "refit it with benchmarks/fit_learned_dvs.py") from err


def save_weights(path: Path, arrays: dict[str, np.ndarray], sampler: SamplerParams,
                 meta: dict | None = None) -> Path:
    """Write the model atomically (float32 arrays, the sampler and ``meta`` as JSON text)."""
    import io

    from flexsnn.io_utils import atomic_write_bytes

    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"learned DVS model lacks {missing}")
    buf = io.BytesIO()
    present = ARRAYS + tuple(k for k in OPTIONAL_ARRAYS if arrays.get(k) is not None)
    np.savez(buf, **{k: np.asarray(arrays[k], dtype=np.float32) for k in present},
             sampler=np.array(json.dumps(sampler.__dict__, sort_keys=True)),
             meta=np.array(json.dumps(meta or {}, sort_keys=True)))
    return atomic_write_bytes(path, buf.getvalue())


class LearnedDVS:
    """The fitted model: :meth:`rates` of images, :meth:`sample` of one recording.

    Args:
        path: the ``.npz`` of :func:`save_weights` (default: the shipped fit).
    """

    def __init__(self, path: Path = DEFAULT_WEIGHTS) -> None:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                self.arrays = {k: np.asarray(z[k], dtype=np.float32) for k in ARRAYS}
                self.time_factor = (np.asarray(z["time_factor"], dtype=np.float64)
                                    if "time_factor" in z.files else None)
                self.patterns = {k: np.asarray(z[k], dtype=np.float32) for k in PATTERNS if k in z.files}
                sampler = json.loads(str(z["sampler"]))
                self.meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"cannot read the learned DVS model {path}: {err}; reinstall "
                            "flexsnn or refit it with benchmarks/fit_learned_dvs.py") from err
        try:
            self.sampler = SamplerParams(**sampler)
        except TypeError as err:
            raise DataError(f"{path}: sampler fields {sorted(sampler)} do not match "
                            f"{sorted(SamplerParams.__dataclass_fields__)}") from err
        self.sampler.check(str(path))
        out = self.arrays["conv2_weight"].shape[0]
        if out % 2 or self.arrays["gain"].shape != (2, 1, SIZE, SIZE):
            raise DataError(f"{path}: conv2 has {out} output channels and gain the shape "
                            f"{self.arrays['gain'].shape}; expected 2 * n_bins and (2, 1, 34, 34)")
        self.n_bins = out // 2
        if self.time_factor is not None and (self.time_factor.ndim != 2
                                             or self.time_factor.shape[0] != out):
            raise DataError(f"{path}: time_factor has the shape {self.time_factor.shape}; expected "
                            f"({out}, r), one row per polarity and bin; refit with "
                            "benchmarks/fit_learned_dvs.py")
        for name, pattern in self.patterns.items():
            finite = bool(np.isfinite(pattern).all())
            if pattern.shape != (2, self.n_bins, SIZE, SIZE) or not finite:
                raise DataError(f"{path}: {name} has the shape {pattern.shape} (finite: "
                                f"{finite}); expected finite values of the "
                                f"shape (2, {self.n_bins}, {SIZE}, {SIZE}), one per polarity, bin and "
                                "pixel; refit with benchmarks/fit_learned_dvs.py")
        self.path = path

    def with_sampler(self, sampler: SamplerParams) -> "LearnedDVS":
        """The same rates with another sampler (shares the arrays)."""
        sampler.check(str(self.path))
        copy = object.__new__(LearnedDVS)
        copy.__dict__.update(self.__dict__)
        copy.sampler = sampler
        return copy

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> "LearnedDVS":
        """The same sampler, time gain and patterns with other fitted arrays (every name of
        :data:`ARRAYS`, each of the shape it has here; e.g. a refitted CNN), held as float32."""
        for name in ARRAYS:
            shape = np.shape(arrays[name]) if name in arrays else None
            if shape != self.arrays[name].shape:
                raise DataError(f"{self.path}: with_arrays got {name} of the shape {shape}; expected "
                                f"{self.arrays[name].shape}, as in the model it replaces")
        copy = self.with_sampler(self.sampler)
        copy.arrays = {k: np.asarray(arrays[k], np.float32) for k in ARRAYS}
        copy.__dict__.pop("_noise_rates", None)  # computed from the old noise arrays
        return copy

    def with_time_factor(self, factor: np.ndarray | None) -> "LearnedDVS":
        """The same model with another ``time_factor`` ``[2 * n_bins, r]`` (None: no time gain),
        held as :func:`save_weights` stores it (float32)."""
        copy = self.with_sampler(self.sampler)
        copy.time_factor = None if factor is None else np.asarray(factor, np.float32).astype(np.float64)
        return copy

    def with_patterns(self, patterns: dict[str, np.ndarray]) -> "LearnedDVS":
        """The same model with other sensor patterns (``{}``: none), held as float32."""
        copy = self.with_sampler(self.sampler)
        copy.patterns = {k: np.asarray(v, np.float32) for k, v in patterns.items() if v is not None}
        copy.__dict__.pop("_noise_rates", None)  # computed with the old patterns
        return copy

    def rate_parts(self, images: np.ndarray):
        """The two terms of :meth:`rates` as torch float32 tensors: the signal's expected events
        ``[N, 2, n_bins, 34, 34]`` and the noise's log rate ``[1, 2, n_bins, 34, 34]``, the
        sensor patterns (if any) applied."""
        import torch
        from torch.nn import functional as F

        a = {k: torch.from_numpy(v) for k, v in self.arrays.items()}
        x = torch.from_numpy(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)
        with torch.no_grad():
            h = torch.relu(F.conv2d(F.pad(x, (IMAGE_PAD,) * 4), a["conv1_weight"], a["conv1_bias"],
                                    padding=a["conv1_weight"].shape[-1] // 2))
            o = F.conv2d(h, a["conv2_weight"], a["conv2_bias"]).reshape(-1, 2, self.n_bins, SIZE, SIZE)
            signal = torch.exp((o + a["gain"]).clamp(max=6.0))
            if "gain_pt" in self.patterns:  # after the clamp, as fit_sensor_patterns fits it
                signal = signal * torch.exp(torch.from_numpy(self.patterns["gain_pt"]))
        return signal, self._log_noise()

    def _log_noise(self):
        """The background's log rate ``[1, 2, n_bins, 34, 34]`` (torch float32; no image in it)."""
        import torch

        log_noise = torch.from_numpy(self.arrays["noise"] + self.arrays["noise_t"].reshape(1, self.n_bins, 1, 1))
        if "noise_pt" in self.patterns:
            log_noise = log_noise + torch.from_numpy(self.patterns["noise_pt"])
        return log_noise.unsqueeze(0)

    def rates(self, images: np.ndarray) -> np.ndarray:
        """Expected events ``[N, 2, n_bins, 34, 34]`` (float64) of ``[N, 28, 28]`` images in [0, 1]."""
        import torch

        signal, log_noise = self.rate_parts(images)
        return (signal + torch.exp(log_noise)).double().numpy()

    @functools.cached_property
    def _noise_rates(self) -> np.ndarray:
        import torch

        return torch.exp(self._log_noise()[0]).double().numpy()

    def noise_rates(self) -> np.ndarray:
        """The background's expected events ``[2, n_bins, 34, 34]`` (the same for every image;
        part of :meth:`rates`)."""
        return self._noise_rates.copy()

    def field(self, rng: np.random.Generator) -> np.ndarray:
        """One recording's multiplicative rate field ``[34, 34]`` (mean 1)."""
        s = self.sampler
        z = rng.standard_normal((SIZE, SIZE))
        if s.field_scale_px > 0:
            from scipy.ndimage import gaussian_filter

            z = gaussian_filter(z, s.field_scale_px) / _filter_norm(s.field_scale_px)
        g = rng.standard_normal()
        return np.exp(s.field_sigma * z - s.field_sigma ** 2 / 2
                      + s.gain_sigma * g - s.gain_sigma ** 2 / 2)

    def time_gain(self, rng: np.random.Generator) -> np.ndarray:
        """One recording's multiplicative gain per polarity and bin ``[2, n_bins, 1, 1]`` (mean 1;
        all ones without a ``time_factor``)."""
        if self.time_factor is None:
            return np.ones((2, self.n_bins, 1, 1))
        f = self.time_factor
        z = f @ rng.standard_normal(f.shape[1]) - 0.5 * (f * f).sum(1)
        return np.exp(z).reshape(2, self.n_bins, 1, 1)

    def sample(self, rates: np.ndarray, rng: np.random.Generator,
               noise: np.ndarray | None = None) -> np.ndarray:
        """One recording (:data:`EVENT_DTYPE`, sorted by t in µs) of ``rates`` ``[2, n_bins, 34, 34]``
        (expected events per polarity, bin and pixel).

        With ``sampler.noise_shape`` set, the part ``noise`` of ``rates`` (same layout, or a
        scalar; default :meth:`noise_rates`, which :meth:`rates` includes) is drawn apart from the
        rest: as a renewal process of that shape, outside the bursts.
        """
        s = self.sampler
        nb = self.n_bins
        gain = self.field(rng) * self.time_gain(rng)
        if s.noise_shape is None:
            parts = [(rates, s.renewal_shape, True)]
        else:
            noise = self._noise_rates if noise is None else np.broadcast_to(np.asarray(noise, np.float64), rates.shape)
            parts = [(np.maximum(rates - noise, 0.0), s.renewal_shape, True), (noise, s.noise_shape, False)]
        channels, times, bursty = [], [], []
        for part, shape, in_bursts in parts:
            lam = (part * gain).transpose(0, 2, 3, 1).reshape(-1, nb)  # [channel, bin]
            ch, u = _renewal(lam, shape, rng)
            channels.append(ch)
            times.append(u)
            bursty.append(np.full(ch.size, in_bursts))
        ch, u, bursty = np.concatenate(channels), np.concatenate(times), np.concatenate(bursty)
        duration = max(rng.normal(s.duration_mean_us, s.duration_std_us), 1.0)
        if s.burst_size > 1.0:
            u[bursty] = self._bursts(u[bursty], ch[bursty], rng, duration)
        return events_at(ch, u, duration)

    def _bursts(self, u: np.ndarray, channel: np.ndarray, rng: np.random.Generator,
                duration: float) -> np.ndarray:
        """Event times ``u`` (normalized, ``[n]``) gathered into bursts per channel and saccade
        (items 4 and 5 of the module docstring); ``duration`` (µs) converts the sampler's µs."""
        s = self.sampler
        group = channel.astype(np.int64) * 3 + np.searchsorted([s.pause1_at, s.pause2_at], u)
        order = np.lexsort((rng.random(u.size), group))  # a random order within each group
        g = group[order]
        first = np.r_[True, g[1:] != g[:-1]]
        starts = np.flatnonzero(first)
        gid = np.cumsum(first) - 1
        size = np.diff(np.r_[starts, g.size])
        rank = np.arange(g.size) - starts[gid]
        n_bursts = np.ceil(size / s.burst_size).astype(np.int64)[gid]
        lead = starts[gid] + rank % n_bursts  # the first n_bursts events (random ones) lead
        follower = rank >= n_bursts
        if s.burst_interval_us is None:
            # followers scatter symmetrically about their lead, so the mean profile is blurred
            # by the spread, not shifted
            offset = np.where(follower, s.burst_spread_us / duration * rng.standard_normal(g.size), 0.0)
        else:
            k = s.burst_interval_shape
            gaps = np.where(follower, rng.gamma(k, s.burst_interval_us / duration / k, g.size), 0.0)
            offset = _train_offsets(lead, gaps)
        t = u[order][lead] + offset
        out = np.empty_like(u)
        out[order] = np.clip(t, 0.0, 1.0)
        return out


def events_at(channel: np.ndarray, u: np.ndarray, duration: float) -> np.ndarray:
    """Events (:data:`EVENT_DTYPE`, sorted by t) of channels ``p * 34 * 34 + y * 34 + x`` at
    normalized times ``u`` in [0, 1] of a recording ``duration`` µs long, ``[n]`` each."""
    t = np.floor(u * duration).astype(np.int64)
    if t.size:  # a real file ends with its last event; stretching u to end there skews the bins
        t[np.argmax(u)] = int(duration)
    order = np.argsort(t, kind="stable")
    events = np.empty(order.size, dtype=EVENT_DTYPE)
    events["x"] = (channel % (SIZE * SIZE) % SIZE)[order]
    events["y"] = (channel % (SIZE * SIZE) // SIZE)[order]
    events["p"] = (channel // (SIZE * SIZE))[order]
    events["t"] = t[order]
    return events


def _train_offsets(lead: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Each event's time relative to its burst's centre when a burst's events (``lead``: the
    burst's id, ``[n]``; members in array order, the lead first with gap 0) follow one another
    at ``gaps``: the running sum of the gaps within the burst, less its mean over the burst (so
    the train is centred on the lead's time and the mean profile is not shifted)."""
    o = np.argsort(lead, kind="stable")
    cum = np.cumsum(gaps[o])
    first = np.r_[True, lead[o][1:] != lead[o][:-1]]
    pos = np.empty_like(gaps)
    pos[o] = cum - np.maximum.accumulate(np.where(first, cum - gaps[o], 0.0))
    mean = np.bincount(lead, weights=pos, minlength=lead.size) / np.maximum(np.bincount(lead, minlength=lead.size), 1)
    return pos - mean[lead]


#: Channels are drawn in groups by how many intervals they may need (at most this many each),
#: so the many quiet channels do not draw as many intervals as the busiest one.
_DRAW_GROUPS = (24, 64)


def _renewal(lam: np.ndarray, shape: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Events of renewal processes with Gamma(``shape``) intervals in the integrated rate, one
    per row of ``lam`` ``[channel, bin]`` (expected events per bin): their channels and
    normalized times ``(bin + position in it) / n_bins``, ``[n]`` each."""
    total = lam.sum(1)
    live = np.flatnonzero(total > 1e-6)
    need = np.ceil(total[live] * 1.3 + 8 * np.sqrt(total[live]) + 8)
    channels, times = [], []
    for lo, hi in zip((0.0,) + _DRAW_GROUPS, _DRAW_GROUPS + (np.inf,)):
        rows = live[(need > lo) & (need <= hi)]
        if rows.size:
            row, u = _renewal_rows(lam[rows], shape, rng)
            channels.append(rows[row])
            times.append(u)
    if not channels:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(channels), np.concatenate(times)


def _renewal_rows(lam: np.ndarray, shape: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_renewal` of rows that all expect some events: the row of each event and its time."""
    nb = lam.shape[1]
    cum = np.concatenate([np.zeros((lam.shape[0], 1)), np.cumsum(lam, 1)], 1)
    total = cum[:, -1]
    k = shape
    n_draw = int(np.ceil(total.max() * 1.3 + 8 * np.sqrt(total.max()) + 8))
    gaps = rng.gamma(k, 1.0 / k, size=(lam.shape[0], n_draw))
    # stationary start: the first gap is a length-biased interval cut at a uniform point
    gaps[:, 0] = rng.gamma(k + 1, 1.0 / k, size=lam.shape[0]) * rng.random(lam.shape[0])
    arrivals = np.cumsum(gaps, 1)
    row, _ = np.nonzero(arrivals < total[:, None])
    level = arrivals[arrivals < total[:, None]]
    # integrated rate -> bin and position inside it (rows offset so one search serves all)
    stride = total.max() + 1.0
    flat = (cum + np.arange(lam.shape[0])[:, None] * stride).ravel()
    j = np.searchsorted(flat, level + row * stride, side="right") - 1
    b = np.clip(j - row * (nb + 1), 0, nb - 1)
    frac = np.clip((level - cum[row, b]) / np.maximum(lam[row, b], 1e-12), 0.0, 1.0)
    return row, (b + frac) / nb


@functools.lru_cache(maxsize=8)
def _filter_norm(scale_px: float) -> float:
    """L2 norm of the Gaussian filter, so the smoothed field keeps unit variance."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((SIZE, SIZE))
    impulse[SIZE // 2, SIZE // 2] = 1.0
    return float(np.sqrt((gaussian_filter(impulse, scale_px) ** 2).sum()))


@functools.lru_cache(maxsize=2)
def load_learned_dvs(path: Path = DEFAULT_WEIGHTS) -> LearnedDVS:
    """The model at ``path``, loaded once per process."""
    return LearnedDVS(path)
