"""The one interface every deployment backend implements.

A backend loads a :class:`~flexsnn.converters.ChipImage`, runs one sample's events
(:data:`flexsnn.data.EVENT_DTYPE`, ``t`` in µs, sorted) and returns a :class:`RunResult`.
The asynchronous simulator, the time-binned sinabs backend and the Speck2e devkit backend are
interchangeable in evaluation code and in the hardware-in-the-loop suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from flexsnn.converters.chip_image import ChipImage

#: Output events of chip cores: core id, position, feature (channel), timestamp in µs.
CHIP_EVENT_DTYPE = np.dtype(
    [("core", np.int16), ("x", np.int16), ("y", np.int16), ("feature", np.int16), ("t", np.int64)]
)


@dataclass
class RunResult:
    """What one sample produced.

    Attributes:
        events: output events, :data:`CHIP_EVENT_DTYPE`, in emission order. Always holds the
            output core's events; other cores' only when the backend was asked to record them.
        spike_counts: core id -> number of spikes the core emitted.
        synops: core id -> synaptic operations the core performed (weights applied by
            incoming events, counted at the receiving core).
        class_counts: int64 ``[num_classes]``: spikes per class (from the readout mapping or
            the output core's channels).
        input_events: number of input events consumed.
        duration_us: time span of the consumed input (last t - first t), µs.
    """

    events: np.ndarray
    spike_counts: dict[int, int]
    synops: dict[int, int]
    class_counts: np.ndarray
    input_events: int = 0
    duration_us: int = 0
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def prediction(self) -> int:
        """Arg-max of ``class_counts`` (lowest index on ties); -1 when no class spiked."""
        if self.class_counts.size == 0 or int(self.class_counts.max()) == 0:
            return -1
        return int(np.argmax(self.class_counts))

    @property
    def total_synops(self) -> int:
        return int(sum(self.synops.values()))


@runtime_checkable
class Backend(Protocol):
    """Protocol of a deployment backend.

    Capabilities are attributes: ``name``; ``deterministic`` (the same input always gives the
    same output); ``real_time`` (a sample takes its own duration to run).
    """

    name: str
    deterministic: bool
    real_time: bool

    def load(self, image: ChipImage) -> None:
        """Configure the backend with ``image`` (replacing any previous one)."""
        ...

    def reset(self) -> None:
        """Zero every neuron state; called before each sample."""
        ...

    def run(self, events: np.ndarray) -> RunResult:
        """Reset, then feed one sample's events and collect the outputs."""
        ...

    def predict(self, events: np.ndarray) -> int:
        """Class index predicted for one sample (``run(events).prediction``)."""
        ...

    def close(self) -> None:
        """Release resources (devices, pools); safe to call twice."""
        ...
