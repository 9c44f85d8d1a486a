"""flexsnn: temporally flexible spiking neural networks, trained with mixed time-step
training (MTT), calibrated (TMC), trained memory-efficiently (rate-based backprop), and
deployed to the SynSense Speck2e chip through a validated, integer chip image.

Subpackages (dependencies point down this list):
``data`` (events, N-MNIST, saccade-mnist, frames), ``models`` (neurons, TTM, TFSNN, zoo,
checkpoints), ``training`` (schemes, losses, rate-based backprop, trainer),
``converters`` (chip-ready model, Speck2e limits, mapping, discretization, ChipImage),
``deploy`` (Backend interface, asynchronous simulator, time-binned and devkit backends).
"""

__version__ = "0.1.0"

from flexsnn.errors import (  # noqa: E402  (re-exported for users)
    BackendUnavailable,
    CheckpointError,
    ChipConstraintError,
    ConfigError,
    DataError,
    EventFormatError,
    FlexsnnError,
)

__all__ = [
    "__version__",
    "FlexsnnError",
    "EventFormatError",
    "DataError",
    "ChipConstraintError",
    "CheckpointError",
    "BackendUnavailable",
    "ConfigError",
]
