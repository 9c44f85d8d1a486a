"""Wait for a quiet machine before timing (``--wait-idle SECONDS`` of the speed benchmarks)."""

from __future__ import annotations

import os
import time

IDLE_LOAD = 0.5


def wait_idle(seconds: float, *, threshold: float = IDLE_LOAD, poll_s: float = 10.0, log=print) -> dict:
    """Wait until the 1-minute load average is below ``threshold``, for at most ``seconds``.

    Returns ``{"waited_s", "idle_reached", "threshold", "load_at_start"}`` for the JSON. With
    ``seconds <= 0`` nothing is waited for (the load is only recorded).
    """
    start = time.monotonic()
    load = os.getloadavg()[0]
    if seconds > 0 and load >= threshold:
        log(f"waiting up to {seconds:.0f} s for load < {threshold} (now {load:.2f})")
    while seconds > 0 and load >= threshold and time.monotonic() - start < seconds:
        time.sleep(min(poll_s, max(0.1, seconds - (time.monotonic() - start))))
        load = os.getloadavg()[0]
    return {"waited_s": round(time.monotonic() - start, 1), "idle_reached": load < threshold,
            "threshold": threshold, "load_at_start": list(os.getloadavg())}
