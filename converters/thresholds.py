"""Per-layer threshold scaling of an exported chip image: a deployment-time SynOps knob.

Multiplying one core's ``threshold_high`` by ``k`` (weights and floor unchanged) makes its
neurons need ``k`` times the input charge per spike, so they send about ``1/k`` as many events
to the next core, and every one of those events costs that core's fan-out in SynOps. On the
first core this is the cheapest place to save: its events fan out the most. Measured on the
chip recipe's two trained checkpoints (README "What deployment alone changes",
``benchmarks/results/async_gap_deploy.json``): conv1's threshold x2 takes the asynchronous run
from 1.8M to 0.93M SynOps per sample at the same accuracy (generated and real recordings).

Cores are addressed by their position in the image (0 = the core the input events reach
first), as ``flexsnn inspect`` lists them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from flexsnn.converters.chip_check import check_chip_image
from flexsnn.converters.chip_image import ChipImage
from flexsnn.converters.chips import chip_limits
from flexsnn.errors import ConfigError

__all__ = ["parse_threshold_scale", "scale_thresholds"]


def parse_threshold_scale(text: str, *, option: str = "--threshold-scale") -> dict[int, float]:
    """``"0=2,2=1.5"`` -> ``{0: 2.0, 2: 1.5}`` (core position = factor).

    Raises:
        ConfigError: naming ``option``, for anything else.
    """
    out: dict[int, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        pos, sep, factor = part.partition("=")
        try:
            if not sep:
                raise ValueError(part)
            key, value = int(pos), float(factor)
        except ValueError as err:
            raise ConfigError(option, text, "POSITION=FACTOR pairs, comma-separated, e.g. 0=2",
                              "POSITION is the core's place in the image (0 = first layer)") from err
        if key in out:
            raise ConfigError(option, text, f"each core position once (position {key} twice)")
        out[key] = value
    if not out:
        raise ConfigError(option, text, "at least one POSITION=FACTOR pair, e.g. 0=2")
    return out


def scale_thresholds(image: ChipImage, factors: Mapping[int, float]) -> ChipImage:
    """A copy of ``image`` whose core at position ``i`` has ``threshold_high`` times
    ``factors[i]`` (rounded, at least 1); weights, biases and ``threshold_low`` unchanged.
    The result passes :func:`~flexsnn.converters.chip_check.check_chip_image` for the image's chip.

    Raises:
        ConfigError: a position the image does not have, or a factor that is not > 0.
        ChipConstraintError: a scaled threshold outside the chip's state range.
    """
    n = len(image.cores)
    for pos, k in factors.items():
        if not (isinstance(pos, int) and 0 <= pos < n):
            raise ConfigError("threshold scale core position", pos, f"0..{n - 1} (the image has {n} cores)",
                              "0 is the first layer")
        if not (isinstance(k, (int, float)) and k > 0):
            raise ConfigError(f"threshold scale of core position {pos}", k, "a factor > 0", "e.g. 0=2")
    cores = tuple(replace(c, threshold_high=max(1, round(c.threshold_high * float(factors[i]))))
                  if i in factors else c for i, c in enumerate(image.cores))
    return check_chip_image(replace(image, cores=cores), limits=chip_limits(image.chip),
                            source="threshold-scaled image")
