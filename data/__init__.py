"""Event data: the event dtype and validation, N-MNIST files, the saccade-mnist generator,
frame binning and torch datasets. Importing this package is cheap (NumPy only)."""

from flexsnn.data.events import (
    EVENT_DTYPE,
    NMNIST_SENSOR,
    SensorSize,
    empty_events,
    make_events,
    validate_events,
)

__all__ = ["EVENT_DTYPE", "NMNIST_SENSOR", "SensorSize", "empty_events", "make_events",
           "validate_events"]
