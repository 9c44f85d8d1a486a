"""The DVS pixel kernel of the saccade generator (numba), beside its pure-Python reference.

:func:`simulate_pixels_reference` is the plain-Python definition; :func:`simulate_pixels` is the
same function compiled by numba (imported lazily through :func:`get_kernel`). Both take the same
arguments and return the number of events written; tests check that they agree.

Model, per pixel (row ``py``, column ``px`` of the sensor):

1. At each rendered frame ``k`` (time ``frame_t[k]`` µs) the pixel sees the (blurred) image at
   ``(px - pos_x[k], py - pos_y[k])`` in padded-image coordinates, bilinearly interpolated,
   zero outside. Its log intensity is ``L = log(background + (1 - background) * I)``.
2. A per-pixel reference ``ref`` starts at ``L_0 - d`` with ``d = ref0[pix]`` (a random phase in
   ``(-c_off, c_on)``). Whenever ``L - ref >= c_on[pix]`` an ON crossing happens and
   ``ref += c_on[pix]``; whenever ``ref - L >= c_off[pix]`` an OFF crossing and
   ``ref -= c_off[pix]``.
3. A crossing's time is where the straight line between the two frames' log intensities meets
   the new reference level, so events are spaced in time between frames.
4. A crossing less than ``refractory_us`` after the pixel's previous event is lost (the
   reference still moves).
"""

from __future__ import annotations

import math

import numpy as np


def simulate_pixels_reference(img: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray,
                              frame_t: np.ndarray, c_on: np.ndarray, c_off: np.ndarray,
                              ref0: np.ndarray, refractory_us: float, background: float,
                              width: int, height: int, out_x: np.ndarray, out_y: np.ndarray,
                              out_p: np.ndarray, out_t: np.ndarray) -> int:
    """Simulate every pixel of one recording; write events into ``out_*``.

    Args:
        img: float64 ``[Hi, Wi]`` padded intensity image in [0, 1].
        pos_x, pos_y: float64 ``[K]`` image offset (px) at each frame: the sensor pixel
            ``(px, py)`` sees image point ``(px - pos_x[k], py - pos_y[k])``.
        frame_t: float64 ``[K]`` frame times in µs (increasing).
        c_on, c_off, ref0: float64 ``[height * width]`` per-pixel thresholds (log units) and
            initial reference offsets.
        refractory_us: refractory period (µs).
        background: black level in [0, 1).
        width, height: sensor size.
        out_x, out_y, out_p (int64), out_t (float64 µs): output buffers, capacity = their length.

    Returns:
        number of events written, or ``-1`` when the buffers were too small.
    """
    hi, wi = img.shape
    n_frames = frame_t.shape[0]
    cap = out_t.shape[0]
    n = 0
    for py in range(height):
        for px in range(width):
            pix = py * width + px
    
            con = c_on[pix]
            coff = c_off[pix]
            ref = 0.0
            lp = 0.0
            last = -1e18
            for k in range(n_frames):
                u = px - pos_x[k]
                v = py - pos_y[k]
                u0 = math.floor(u)
                v0 = math.floor(v)
                fu = u - u0
                fv = v - v0
                iu = int(u0)
                iv = int(v0)
                val = 0.0
                if 0 <= iv < hi and 0 <= iu < wi:
                    val += (1.0 - fu) * (1.0 - fv) * img[iv, iu]
                if 0 <= iv < hi and 0 <= iu + 1 < wi:
                    val += fu * (1.0 - fv) * img[iv, iu + 1]
                if 0 <= iv + 1 < hi and 0 <= iu < wi:
                    val += (1.0 - fu) * fv * img[iv + 1, iu]
                if 0 <= iv + 1 < hi and 0 <= iu + 1 < wi:
                    val += fu * fv * img[iv + 1, iu + 1]
                lum = math.log(background + (1.0 - background) * val)
                if k == 0:
                    ref = lum - ref0[pix]
                    lp = lum
                    continue
                t0 = frame_t[k - 1]
                dt = frame_t[k] - t0
                while lum - ref >= con:
                    ref += con
                    t = t0 + dt * (ref - lp) / (lum - lp)
                    if t - last >= refractory_us:
                        if n >= cap:
                            return -1
                        out_x[n] = px
                        out_y[n] = py
                        out_p[n] = 1
                        out_t[n] = t
                        n += 1
                        last = t
                while ref - lum >= coff:
                    ref -= coff
                    t = t0 + dt * (lp - ref) / (lp - lum)
                    if t - last >= refractory_us:
                        if n >= cap:
                            return -1
                        out_x[n] = px
                        out_y[n] = py
                        out_p[n] = 0
                        out_t[n] = t
                        n += 1
                        last = t
                lp = lum
    return n


_KERNEL = None


def get_kernel():
    """The numba-compiled :func:`simulate_pixels_reference` (compiled once, cached on disk);
    falls back to the reference when numba is unavailable."""
    global _KERNEL
    if _KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _KERNEL = simulate_pixels_reference
        else:
            _KERNEL = numba.njit(cache=True, nogil=True)(simulate_pixels_reference)
    return _KERNEL


def simulate_pixels(*args):
    """numba version of :func:`simulate_pixels_reference` (same arguments and result)."""
    return get_kernel()(*args)
