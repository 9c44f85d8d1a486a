"""Converters: checkpoint -> chip-ready sinabs model -> validated, mapped, discretized
:class:`ChipImage` (+ NIR, ONNX, samna configuration).

Importing this package loads only NumPy; torch-based steps live in their own modules.
"""

from flexsnn.converters.chip_image import (
    ChipImage,
    CoreConfig,
    Destination,
    InputConfig,
    ReadoutConfig,
    check_chip_image,
)
from flexsnn.converters.speck2e import SPECK2E, ChipLimits

__all__ = ["ChipImage", "CoreConfig", "Destination", "InputConfig", "ReadoutConfig",
           "check_chip_image", "SPECK2E", "ChipLimits"]
