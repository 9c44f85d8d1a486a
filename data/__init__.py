"""Event data: the event dtype and validation, N-MNIST files, the saccade-mnist generator,
frame binning and torch datasets. Importing this package is cheap (NumPy only); torch is
imported only by the frame dataset/loader when used."""

from flexsnn.data.events import (
    EVENT_DTYPE,
    NMNIST_SENSOR,
    SensorSize,
    empty_events,
    make_events,
    validate_events,
)
from flexsnn.data.frames import (
    Augment,
    EventDataset,
    FrameDataset,
    events_to_frames,
    frame_loader,
    to_time_major,
)
from flexsnn.data.nmnist import NMNISTFolder, read_bin, write_bin
from flexsnn.data.registry import load_event_dataset

__all__ = ["EVENT_DTYPE", "NMNIST_SENSOR", "SensorSize", "empty_events", "make_events",
           "validate_events", "Augment", "EventDataset", "FrameDataset", "events_to_frames",
           "frame_loader", "to_time_major", "NMNISTFolder", "read_bin", "write_bin",
           "load_event_dataset"]
