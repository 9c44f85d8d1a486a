"""TEST DOUBLE of samna for importing sinabs.backend.dynapcnn where the real samna is absent.

``sinabs.backend.dynapcnn`` imports samna (and samnagui) at module level, so the sinabs oracle
test (tests/test_sinabs_oracle.py) installs this stand-in in ``sys.modules`` for the duration of
one test: it lets sinabs' *real* mapping, discretization and config builder run, writing into
configuration objects with samna's documented field names (``__slots__``, so a field samna
does not have fails here too). It never stands in for the code under test and is never used by
flexsnn itself. :func:`installed` removes it, and every sinabs.backend.dynapcnn module imported
under it, on exit.

(Re-created by the hardware helper: its first version was overwritten by mistake; the
configuration classes are shared with the device double in ``samna_device_double.py``.)
"""

from __future__ import annotations

import contextlib
import sys
from types import ModuleType
from typing import Iterator

from doubles.samna_device_double import (
    DeviceInfoDouble,
    ReadoutPinValueDouble,
    SpeckConfigurationDouble,
    SpikeDouble,
    WriteNeuronValueDouble,
)

DOC = "samna test-double (tests/doubles/samna_double.py); not the SynSense SDK"


def _module(name: str, **attrs: object) -> ModuleType:
    mod = ModuleType(name, DOC)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _chip_modules(chip: str) -> dict[str, ModuleType]:
    configuration = _module(f"samna.{chip}.configuration", SpeckConfiguration=SpeckConfigurationDouble)
    event = _module(f"samna.{chip}.event", Spike=SpikeDouble, WriteNeuronValue=WriteNeuronValueDouble,
                    ReadoutPinValue=ReadoutPinValueDouble)
    top = _module(f"samna.{chip}", configuration=configuration, event=event,
                  validate_configuration=lambda config: (True, ""))
    return {f"samna.{chip}": top, f"samna.{chip}.configuration": configuration, f"samna.{chip}.event": event}


def build_modules() -> dict[str, ModuleType]:
    """The fake ``samna`` package (speck2e, speck2f, device, graph) and ``samnagui``."""
    mods: dict[str, ModuleType] = {}
    mods.update(_chip_modules("speck2e"))
    mods.update(_chip_modules("speck2f"))

    def _no_device(*args: object, **kwargs: object) -> None:
        raise RuntimeError("samna test double: there is no device")

    mods["samna.device"] = _module("samna.device", DeviceInfo=DeviceInfoDouble, get_all_devices=lambda: [],
                                   open_device=_no_device, close_device=_no_device)
    mods["samna.graph"] = _module("samna.graph")
    mods["samna"] = _module(
        "samna", speck2e=mods["samna.speck2e"], speck2f=mods["samna.speck2f"], device=mods["samna.device"],
        graph=mods["samna.graph"])
    mods["samna"].__path__ = []  # a package, so `from samna.speck2e.configuration import ...` resolves
    mods["samnagui"] = _module("samnagui")
    return mods


@contextlib.contextmanager
def installed() -> Iterator[ModuleType]:
    """Install the double as ``samna``/``samnagui`` and yield it; on exit restore the previous
    modules and drop every ``sinabs.backend.dynapcnn`` module imported meanwhile."""
    names = ("samna", "samnagui")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in names or k.startswith("sinabs.backend.dynapcnn")}
    for k in saved:
        del sys.modules[k]
    mods = build_modules()
    sys.modules.update(mods)
    try:
        yield mods["samna"]
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in names or k.startswith("sinabs.backend.dynapcnn")]:
            del sys.modules[k]
        sys.modules.update(saved)
