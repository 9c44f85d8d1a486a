"""Build small ChipImages by hand (tests must not depend on the converter).

- :func:`single_core_image`: one core fed by the DVS input, with given weights/geometry.
- :func:`random_chain_image`: a random chain (optionally with a second, merging branch) of
  small cores with random int8 weights, seeded.
- :func:`random_events`: random sorted events on a sensor, seeded.
"""

from __future__ import annotations

import numpy as np

from flexsnn.converters.chip_image import ChipImage, CoreConfig, Destination, InputConfig, ReadoutConfig
from flexsnn.data.events import make_events


def out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def core(core_id: int, in_shape, weights, *, stride=(1, 1), padding=(0, 0), thr_high=10,
         thr_low=-100, reset="subtract", dests=(), biases=None, leak=False, layer=0) -> CoreConfig:
    """A CoreConfig with the output shape computed from the geometry."""
    w = np.asarray(weights, dtype=np.int8)
    c_out, c_in, k, _ = w.shape
    h = out_size(in_shape[1], k, stride[0], padding[0])
    wd = out_size(in_shape[2], k, stride[1], padding[1])
    b = np.zeros(c_out, np.int16) if biases is None else np.asarray(biases, dtype=np.int16)
    return CoreConfig(core=core_id, layer=layer, name=f"L{layer}", input_shape=tuple(in_shape),
                      output_shape=(c_out, h, wd), kernel_size=k, stride=tuple(stride),
                      padding=tuple(padding), weights=w, biases=b, threshold_high=thr_high,
                      threshold_low=thr_low, reset_mode=reset, leak_enabled=leak,
                      destinations=tuple(Destination(c, p) for c, p in dests))


def single_core_image(weights, in_shape=(1, 5, 5), *, readout=None, input_pooling=1,
                      merge_polarities=False, **kw) -> ChipImage:
    """One core (id 0) fed by the input, which is also the output core."""
    c = core(0, in_shape, weights, **kw)
    return ChipImage(input=InputConfig(shape=tuple(in_shape), destinations=(0,), pooling=input_pooling,
                                       merge_polarities=merge_polarities),
                     cores=(c,), output_core=0, readout=readout)


def random_chain_image(seed: int, *, n_cores: int | None = None, merge: bool | None = None,
                       leak: bool = False, reset: str | None = None) -> ChipImage:
    """A random small chain of 1-3 cores (random kernel, stride, padding, pooling, thresholds).

    With ``merge`` the first core also sends (pooled) events straight to the last core, whose
    input shape must match, so the chain is built with that in mind (skip connection).
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4)) if n_cores is None else n_cores
    c_in, h, w = int(rng.integers(1, 3)), int(rng.integers(4, 9)), int(rng.integers(4, 9))
    shape = (c_in, h, w)
    in_shape = shape
    specs = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        s = int(rng.choice([1, 1, 2]))
        p = int(rng.integers(0, k))
        c_out = int(rng.integers(1, 4))
        oh, ow = out_size(shape[1], k, s, p), out_size(shape[2], k, s, p)
        if oh < 1 or ow < 1:
            k, s, p = 1, 1, 0
            oh, ow = shape[1], shape[2]
        pool = int(rng.choice([1, 1, 2])) if i < n - 1 and min(oh, ow) >= 2 else 1
        specs.append((shape, c_out, k, s, p, pool))
        shape = (c_out, oh // pool, ow // pool)
    cores = []
    for i, (shp, c_out, k, s, p, pool) in enumerate(specs):
        thr = int(rng.integers(3, 30))
        wts = rng.integers(-thr // 2 - 2, thr + 3, size=(c_out, shp[0], k, k))
        dests = [(i + 1, pool)] if i < n - 1 else []
        biases = rng.integers(-3, 4, size=c_out) if leak else None
        cores.append(dict(core_id=i, in_shape=shp, weights=wts, stride=(s, s), padding=(p, p),
                          thr_high=thr, thr_low=-int(rng.integers(0, 3 * thr)),
                          reset=reset or str(rng.choice(["subtract", "zero"])), dests=dests,
                          biases=biases, leak=leak, layer=i))
    do_merge = (n >= 2) if merge is None else merge
    if do_merge and n >= 2:
        # second destination of core 0 -> last core, when the shapes allow it
        last_in = specs[-1][0]
        s0 = specs[0]
        c0, h0, w0 = s0[1], out_size(s0[0][1], s0[2], s0[3], s0[4]), out_size(s0[0][2], s0[2], s0[3], s0[4])
        for pool in (1, 2, 4):
            if (c0, h0 // pool, w0 // pool) == tuple(last_in) and n > 2:
                cores[0]["dests"] = cores[0]["dests"] + [(n - 1, pool)]
                break
    built = [core(**c) for c in cores]
    return ChipImage(input=InputConfig(shape=in_shape, destinations=(0,)), cores=tuple(built),
                     output_core=n - 1)


def random_events(seed: int, sensor_w: int, sensor_h: int, polarities: int, n: int,
                  *, t_step_max: int = 50) -> np.ndarray:
    """``n`` random events, sorted by t (µs), some with equal timestamps."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, t_step_max, size=n))
    return make_events(rng.integers(0, sensor_w, n), rng.integers(0, sensor_h, n),
                       rng.integers(0, polarities, n), t)


__all__ = ["core", "single_core_image", "random_chain_image", "random_events", "ReadoutConfig"]


def nmnist_image(seed: int = 0, *, thr: int = 40) -> ChipImage:
    """A small random 2-core image for N-MNIST-shaped input (2, 34, 34) with 10 classes:
    core 0 conv 2->4 k3 stride 4 pad 1 (9x9) -> core 3 conv 4->10 k9 (1x1)."""
    rng = np.random.default_rng(seed)
    c0 = core(0, (2, 34, 34), rng.integers(-5, 25, (4, 2, 3, 3)), stride=(4, 4), padding=(1, 1),
              thr_high=thr, thr_low=-thr, dests=[(3, 1)])
    c1 = core(3, (4, 9, 9), rng.integers(-3, 8, (10, 4, 9, 9)), thr_high=thr, thr_low=-thr, layer=1)
    return ChipImage(input=InputConfig((2, 34, 34), (0,)), cores=(c0, c1), output_core=3)
