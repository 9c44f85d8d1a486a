import numpy as np
import pytest

from flexsnn.data import EVENT_DTYPE, SensorSize, make_events, validate_events
from flexsnn.errors import EventFormatError

SENSOR = SensorSize(width=40, height=30, polarities=2)  # non-square: catches x/y swaps


def _events(n=20, seed=0):
    r = np.random.default_rng(seed)
    return make_events(r.integers(0, 40, n), r.integers(0, 30, n), r.integers(0, 2, n),
                       np.sort(r.integers(0, 10_000, n)))


def test_valid_events_pass_unchanged():
    ev = _events()
    assert validate_events(ev, SENSOR) is ev
    assert ev.dtype == EVENT_DTYPE


def test_empty_events_pass():
    assert validate_events(np.empty(0, EVENT_DTYPE), SENSOR).size == 0


@pytest.mark.parametrize(
    "field,value,index",
    [("x", 40, 3), ("x", -1, 0), ("y", 30, 5), ("p", 2, 7), ("t", -5, 0)],
)
def test_each_rule_names_field_index_value(field, value, index):
    ev = _events()
    ev[field][index] = value
    if field == "t":
        ev["t"][:] = np.maximum(ev["t"], 0)
        ev["t"][0] = value
    with pytest.raises(EventFormatError) as info:
        validate_events(ev, SENSOR, source="sample-7")
    err = info.value
    assert (err.field, err.index, err.value, err.source) == (field, index, value, "sample-7")
    assert "sample-7" in str(err) and field in str(err)


def test_unsorted_timestamps_name_first_decrease():
    ev = _events()
    ev["t"][10] = ev["t"][9] - 1
    with pytest.raises(EventFormatError) as info:
        validate_events(ev, SENSOR)
    assert info.value.field == "t" and info.value.index == 10


def test_wrong_dtype_is_refused():
    bad = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("p", "f4"), ("t", "f4")])
    with pytest.raises(EventFormatError, match="dtype"):
        validate_events(bad, SENSOR)
    with pytest.raises(EventFormatError, match="structured"):
        validate_events(np.zeros((3, 4)), SENSOR)
