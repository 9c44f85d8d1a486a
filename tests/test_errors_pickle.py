"""Errors raised in worker processes reach the parent as themselves: every FlexsnnError survives
pickling with its message and attributes (a process pool pickles a worker's exception)."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from flexsnn.errors import (BackendUnavailable, CheckpointError, ChipConstraintError, ConfigError, DataError,
                            EventFormatError, FlexsnnError, Violation)

ERRORS = [
    ConfigError("chip_T", 5, "an integer in [10, 1000]", "e.g. --chip-T 100"),
    DataError("no recordings under /data/nmnist"),
    EventFormatError("t not sorted", source="a.bin", field="t", index=3, value=7, byte_offset=15),
    ChipConstraintError([Violation("layer 0", "kernel_size", 17, "<= 16", "use 16")]),
    CheckpointError("x.safetensors", "truncated", "train again", field="cores[0].stride", value=3),
    BackendUnavailable("samna", "not installed", "pip install samna"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_round_trips_through_pickle(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err)
    assert back.__dict__ == err.__dict__ and back.exit_code == err.exit_code


def _raise_config_error(value: int) -> None:
    raise ConfigError("chip_T", value, "an integer >= 10", "e.g. 100")


def test_a_worker_process_error_arrives_as_itself():
    with ProcessPoolExecutor(max_workers=1) as pool:
        with pytest.raises(ConfigError) as info:
            pool.submit(_raise_config_error, 5).result()
    assert isinstance(info.value, FlexsnnError) and info.value.field == "chip_T" and info.value.value == 5
    assert "chip_T=5 is invalid" in str(info.value)
