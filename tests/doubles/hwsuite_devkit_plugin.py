"""TEST DOUBLE pytest plugin: run the hwtests suite's ``speck2e`` parameter against the samna
device double (``samna_device_double.py``), to test the suite's devkit plumbing (fixtures,
options, report) where no samna and no devkit exist. Its "chip" echoes every input spike once
from the core it was sent to (the behaviour of the suite's identity images), so only the
identity tests are meaningful with it. Used only by tests/test_hwtest_cli.py via ``-p``.
"""

from __future__ import annotations

import pytest

import flexsnn.deploy.speck2e as speck2e
from doubles.samna_device_double import DeviceInfoDouble, SpikeDouble, make_samna_double

_PATCH: list[pytest.MonkeyPatch] = []


def _echo(spikes: list) -> list:
    return [SpikeDouble(s.layer, s.x, s.y, 0, s.timestamp + 3) for s in spikes]


def pytest_configure(config: pytest.Config) -> None:
    double = make_samna_double([DeviceInfoDouble("Speck2eDevKit", "DOUBLE-1", 1, 2)], _echo)
    mp = pytest.MonkeyPatch()
    mp.setattr(speck2e, "_samna", lambda: double)
    mp.setattr(speck2e, "devkit_status", lambda: (True, "samna test double"))
    _PATCH.append(mp)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _PATCH:
        _PATCH.pop().undo()
