"""Build any deployment backend by name: :func:`make_backend`."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

from flexsnn.converters.chip_image import ChipImage
from flexsnn.deploy.backend import Backend
from flexsnn.errors import ConfigError

BACKENDS = ("async", "time-binned", "speck2e", "reference")


def _check_options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"{name} option", unknown, f"one of {sorted(allowed)}",
                          "check the spelling (options are keyword arguments of the backend)")


def make_backend(name: str, *, image: ChipImage | None = None, **options: Any) -> Backend:
    """A backend by ``name``: ``"async"`` (:class:`~flexsnn.deploy.async_sim.AsyncSimulator`,
    options of :class:`~flexsnn.deploy.async_sim.SimConfig`), ``"time-binned"``
    (:class:`~flexsnn.deploy.time_binned.TimeBinnedBackend`: ``T``, ``spike``, ``batch_size``)
    ``"reference"`` (:class:`~flexsnn.deploy.reference_sim.ReferenceBackend`, the independent
    plain-Python simulator; options as ``"async"``'s rules) or ``"speck2e"`` (the devkit, :class:`flexsnn.deploy.speck2e.Speck2eBackend`, imported only
    here and only when asked for; it needs samna and a devkit).

    ``image``: when given, the backend is loaded with it before it is returned.

    Raises:
        ConfigError: unknown name or option.
        BackendUnavailable: speck2e without samna.

    Example::

        sim = make_backend("async", spike="single", image=ChipImage.load("model.chip"))
    """
    if name == "async":
        from flexsnn.deploy.async_sim import AsyncSimulator, SimConfig

        _check_options(name, options, {f.name for f in fields(SimConfig)} | {"limits"})
        backend: Backend = AsyncSimulator(**options)
    elif name == "time-binned":
        from flexsnn.deploy.time_binned import TimeBinnedBackend

        allowed = set(inspect.signature(TimeBinnedBackend.__init__).parameters) - {"self"}
        _check_options(name, options, allowed)
        backend = TimeBinnedBackend(**options)
    elif name == "speck2e":
        from flexsnn.deploy.speck2e import Speck2eBackend  # lazy: samna only when asked for

        backend = Speck2eBackend(**options)
    elif name == "reference":
        from flexsnn.deploy.reference_sim import ReferenceBackend

        allowed = set(inspect.signature(ReferenceBackend.__init__).parameters) - {"self"}
        _check_options(name, options, allowed)
        backend = ReferenceBackend(**options)
    else:
        raise ConfigError("backend", name, "one of " + ", ".join(BACKENDS))
    if image is not None:
        backend.load(image)
    return backend
