"""The independent reference simulator, now :mod:`flexsnn.deploy.reference_sim` (so the
hardware-in-the-loop suite can use it as a backend); re-exported for the tests."""

from flexsnn.deploy.reference_sim import S_MAX, S_MIN, RefSim, ReferenceBackend

__all__ = ["RefSim", "ReferenceBackend", "S_MIN", "S_MAX"]
