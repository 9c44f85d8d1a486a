"""Chip images built by code for the hardware-in-the-loop suite (and unit tests).

All images are integer-exact and fit Speck2e; each builder is deterministic given its
arguments (random ones take a seed).
"""

from __future__ import annotations

import numpy as np

from flexsnn.converters.chip_image import (
    ChipImage,
    CoreConfig,
    Destination,
    InputConfig,
    ReadoutConfig,
    check_chip_image,
)
from flexsnn.data.events import make_events

#: Cores that process events in a fixed order on the chip (0 and 1 run in parallel).
DETERMINISTIC_CORES = (2, 3, 4, 5, 6, 7, 8)


def identity_image(core: int, *, size: tuple[int, int] = (8, 8), threshold: int = 10) -> ChipImage:
    """One core, 1x1 kernel, weight = threshold: every input event makes exactly one output
    event at the same (x, y), channel 0. Input (2, H, W): both polarities have the weight."""
    h, w = size
    weights = np.full((1, 2, 1, 1), threshold, dtype=np.int8)
    cfg = CoreConfig(core=core, layer=0, name="identity", input_shape=(2, h, w), output_shape=(1, h, w),
                     kernel_size=1, stride=(1, 1), padding=(0, 0), weights=weights,
                     biases=np.zeros(1, np.int16), threshold_high=threshold, threshold_low=-threshold)
    image = ChipImage(input=InputConfig(shape=(2, h, w), destinations=(core,)), cores=(cfg,),
                      output_core=core, source=f"identity core {core}")
    return check_chip_image(image)


def random_image(cores: tuple[int, int, int], *, seed: int, size: int = 8, channels: int = 4,
                 num_classes: int = 3, weight_range: int = 6, threshold: int = 8) -> ChipImage:
    """A random integer 3-core chain on ``cores``: conv3x3 (pad 1) -> pool 2 -> conv3x3 (pad 1)
    -> full-size kernel to ``num_classes`` 1x1 outputs (subtract reset, floor -threshold).

    Weights are uniform integers in ``[-weight_range, weight_range]`` with a positive bias
    (+2) so events propagate; weights stay below the threshold.
    """
    return _three_cores(cores, seed=seed, size=size, channels=channels, num_classes=num_classes,
                        weight_range=weight_range, threshold=threshold, branch=False)


def branch_merge_image(cores: tuple[int, int, int], *, seed: int, size: int = 8, channels: int = 4,
                       num_classes: int = 3, weight_range: int = 6, threshold: int = 8) -> ChipImage:
    """A random integer 3-core image with a branch and a merge, so the event order matters:
    core a (conv3x3 pad 1, 8x8) sends to core b (pool 2) *and* straight to core c (pool 2);
    b (conv3x3 pad 1, 4x4) also sends to c, which merges both (kernel 4 -> ``num_classes`` 1x1).

    Depth-first processing delivers a's spike through b to c before a's direct event reaches c;
    breadth-first delivers a's direct event first. With the floor at ``-threshold`` and single
    spikes, c's outputs depend on that order (see :func:`event_order_matters`).
    """
    return _three_cores(cores, seed=seed, size=size, channels=channels, num_classes=num_classes,
                        weight_range=weight_range, threshold=threshold, branch=True)


def _three_cores(cores: tuple[int, int, int], *, seed: int, size: int, channels: int, num_classes: int,
                 weight_range: int, threshold: int, branch: bool) -> ChipImage:
    """The chain of :func:`random_image`; with ``branch`` core a also feeds core c directly."""
    rng = np.random.default_rng(seed)
    a, b, c = cores
    half = size // 2

    def w(shape: tuple[int, ...]) -> np.ndarray:
        return (rng.integers(-weight_range, weight_range + 1, size=shape) + 2).clip(
            -threshold + 1, threshold - 1).astype(np.int8)

    a_to = (Destination(b, 2), Destination(c, 2)) if branch else (Destination(b, 2),)
    core_a = CoreConfig(core=a, layer=0, name="conv1", input_shape=(2, size, size),
                        output_shape=(channels, size, size), kernel_size=3, stride=(1, 1), padding=(1, 1),
                        weights=w((channels, 2, 3, 3)), biases=np.zeros(channels, np.int16),
                        threshold_high=threshold, threshold_low=-threshold, destinations=a_to)
    core_b = CoreConfig(core=b, layer=1, name="conv2", input_shape=(channels, half, half),
                        output_shape=(channels, half, half), kernel_size=3, stride=(1, 1), padding=(1, 1),
                        weights=w((channels, channels, 3, 3)), biases=np.zeros(channels, np.int16),
                        threshold_high=threshold, threshold_low=-threshold,
                        destinations=(Destination(c, 1),))
    core_c = CoreConfig(core=c, layer=2, name="merge-fc" if branch else "fc", input_shape=(channels, half, half),
                        output_shape=(num_classes, 1, 1), kernel_size=half, stride=(1, 1), padding=(0, 0),
                        weights=w((num_classes, channels, half, half)), biases=np.zeros(num_classes, np.int16),
                        threshold_high=threshold, threshold_low=-threshold)
    kind = "branch-merge" if branch else "random"
    image = ChipImage(input=InputConfig(shape=(2, size, size), destinations=(a,)),
                      cores=(core_a, core_b, core_c), output_core=c, source=f"{kind} cores {cores} seed {seed}")
    return check_chip_image(image)


def readout_image(core: int = 3, *, num_classes: int = 3, threshold: int = 10) -> ChipImage:
    """One core 1x1 output map read by the readout: the input (2, 4, 4) fully connected to
    ``4*(k-1)`` channels (Speck2e erratum); class k listens to input row k (mod 4)."""
    n_ch = 4 * (num_classes - 1) + 1
    weights = np.zeros((n_ch, 2, 4, 4), dtype=np.int8)
    for k in range(num_classes):
        weights[4 * k, :, k % 4, :] = threshold
    cfg = CoreConfig(core=core, layer=0, name="readout-fc", input_shape=(2, 4, 4), output_shape=(n_ch, 1, 1),
                     kernel_size=4, stride=(1, 1), padding=(0, 0), weights=weights,
                     biases=np.zeros(n_ch, np.int16), threshold_high=threshold, threshold_low=-threshold)
    image = ChipImage(input=InputConfig(shape=(2, 4, 4), destinations=(core,)), cores=(cfg,),
                      output_core=core, readout=ReadoutConfig(num_classes=num_classes, channel_erratum=True),
                      source=f"readout core {core}")
    return check_chip_image(image)


def random_events(*, seed: int, n: int, size: tuple[int, int], duration_us: int = 20_000) -> np.ndarray:
    """``n`` uniformly random events on a ``size = (H, W)`` sensor with 2 polarities, sorted by t."""
    rng = np.random.default_rng(seed)
    h, w = size
    t = np.sort(rng.integers(0, duration_us, size=n))
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), t)
