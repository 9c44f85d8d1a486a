"""Deployment backends (asynchronous simulator, time-binned sinabs, Speck2e devkit) behind one
:class:`Backend` interface, and dataset evaluation over any of them."""

from flexsnn.deploy.backend import CHIP_EVENT_DTYPE, Backend, RunResult

__all__ = ["Backend", "RunResult", "CHIP_EVENT_DTYPE"]
