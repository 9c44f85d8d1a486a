"""The independent reference simulator, now :mod:`flexsnn.deploy.reference_sim` (so the
hardware-in-the-loop suite can use it as a backend); re-exported for the tests."""

from flexsnn.deploy.reference_sim import S_MAX, S_MIN, RefSim, ReferenceBackend

__all__ = ["RefSim", "ReferenceBackend", "S_MIN", "S_MAX", "RULES", "RULE_IDS", "event_tuples"]

#: the event-rule variants the kernels are compared under
RULES = [
    dict(),
    dict(spike="multi"),
    dict(order="breadth-first"),
    dict(update_order="position-major"),
    dict(saturate=False, spike="multi"),
    dict(saturate=False, order="breadth-first", update_order="position-major"),
]
RULE_IDS = [",".join(f"{k}={v}" for k, v in r.items()) or "default" for r in RULES]


def event_tuples(events):
    """Recorded events as ``(core, x, y, feature, t)`` tuples, for exact comparison."""
    return [tuple(int(e[f]) for f in ("core", "x", "y", "feature", "t")) for e in events]
