"""Pure Speck2e protocol logic (no samna): event fields, addresses, readout, classes, devkit
selection, bounded waiting."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.converters.chip_image import ReadoutConfig
from flexsnn.converters.speck2e import neuron_memory_entries
from flexsnn.data.events import make_events
from flexsnn.deploy.backend import CHIP_EVENT_DTYPE
from flexsnn.deploy import speck2e_protocol as P
from flexsnn.errors import BackendUnavailable, ConfigError, EventFormatError
from flexsnn.hwtests.images import identity_image, random_image, readout_image
from dataclasses import replace


# ---- input events -> Spike fields ----------------------------------------------------------
def test_input_fields_relative_timestamps_and_fields():
    image = identity_image(3, size=(6, 8))  # H=6, W=8: a non-square sensor catches x/y swaps
    ev = make_events([7, 0, 3], [5, 1, 0], [1, 0, 1], [1000, 1500, 4000])
    f = P.input_spike_fields(ev, image, start_delay_us=100)
    assert f.dtype == P.SPIKE_FIELDS_DTYPE
    assert f["layer"].tolist() == [3, 3, 3]
    assert f["x"].tolist() == [7, 0, 3] and f["y"].tolist() == [5, 1, 0]
    assert f["feature"].tolist() == [1, 0, 1]
    assert f["timestamp"].tolist() == [100, 600, 3100]


def test_input_fields_pooling_merge_and_two_destinations():
    base = random_image((2, 3, 4), seed=0)
    image = replace(base, input=replace(base.input, pooling=2, merge_polarities=True, shape=(1, 4, 4)))
    ev = make_events([7, 2], [6, 3], [1, 0], [10, 20])
    f = P.input_spike_fields(ev, image)
    assert f["x"].tolist() == [3, 1] and f["y"].tolist() == [3, 1] and f["feature"].tolist() == [0, 0]
    two = replace(base, input=replace(base.input, destinations=(2, 3)))
    f2 = P.input_spike_fields(make_events([1, 2], [1, 2], [0, 1], [5, 9]), two)
    assert f2["layer"].tolist() == [2, 3, 2, 3]  # each event to both cores, in time order
    assert f2["timestamp"].tolist() == [0, 0, 4, 4]
    assert f2["x"].tolist() == [1, 1, 2, 2]


def test_input_fields_empty_and_invalid():
    image = identity_image(2)
    assert P.input_spike_fields(make_events([], [], [], []), image).size == 0
    with pytest.raises(EventFormatError, match="x"):
        P.input_spike_fields(make_events([8], [0], [0], [0]), image)  # x outside 0..7
    with pytest.raises(ConfigError, match="start_delay_us"):
        P.input_spike_fields(make_events([1], [0], [0], [0]), image, start_delay_us=-1)


def test_input_sensor_undoes_pooling_and_merge():
    base = identity_image(2, size=(4, 6))
    assert P.input_sensor(base) == (6, 4, 2)
    pooled = replace(base, input=replace(base.input, pooling=4, merge_polarities=True, shape=(1, 4, 6)))
    assert P.input_sensor(pooled) == (24, 16, 2)


# ---- output fields -> chip events ------------------------------------------------------
def test_output_events_filters_layers_and_shifts_time():
    out = P.output_events([4, 13, 2, 12, 4], [1, 0, 2, 0, 3], [0, 0, 1, 0, 2], [2, 1, 0, 0, 1],
                          [2100, 2000, 2200, 2300, 2400], cores=(2, 4), t0_us=50_000, start_delay_us=2000)
    assert out.dtype == CHIP_EVENT_DTYPE
    assert out["core"].tolist() == [4, 2, 4]  # DVS echo (13) and readout (12) dropped, order kept
    assert out["t"].tolist() == [50_100, 50_200, 50_400]
    assert out["x"].tolist() == [1, 2, 3] and out["y"].tolist() == [0, 1, 2] and out["feature"].tolist() == [2, 0, 1]
    assert P.output_events([], [], [], [], [], cores=(1,)).size == 0


# ---- neuron addresses --------------------------------------------------------------------
def test_neuron_address_matches_sinabs_layout_by_hand():
    # shape (C=4, H=8, W=8): c_bits 2, y_bits 3, x_bits 3; y << 5 | x << 2 | c
    assert P.neuron_address(1, 2, 3, (4, 8, 8)) == (3 << 5) | (2 << 2) | 1 == 105
    assert P.neuron_cxy(105, (4, 8, 8)) == (1, 2, 3)
    assert P.neuron_address(0, 0, 0, (1, 1, 1)) == 0
    # non-power-of-two sizes round up: (C=3 -> 2 bits, H=34 -> 6 bits, W=34 -> 6 bits)
    assert P.neuron_address(2, 33, 1, (3, 34, 34)) == (1 << 8) | (33 << 2) | 2


@pytest.mark.parametrize("shape", [(8, 34, 34), (16, 17, 17), (1, 8, 8), (3, 1, 1), (9, 16, 16), (5, 3, 4)])
def test_core_addresses_unique_invertible_and_within_neuron_memory(shape):
    addr = P.core_neuron_addresses(shape)
    c, h, w = shape
    assert addr.size == c * h * w and np.unique(addr).size == addr.size
    assert addr.max() < 2 ** sum(P.neuron_address_bits(shape)) <= 2 ** P.NEURON_ADDRESS_BITS
    assert addr.size <= neuron_memory_entries(c, h, w)
    for a in addr[:: max(1, addr.size // 50)]:
        cc, xx, yy = P.neuron_cxy(int(a), shape)
        assert P.neuron_address(cc, xx, yy, shape) == a and cc < c and xx < w and yy < h


def test_neuron_address_refuses_ambiguous_and_oversized_maps():
    for shape in [(1, 2, 16), (1, 16, 2)]:
        with pytest.raises(ConfigError, match="equal width and height bits"):
            P.neuron_address(0, 0, 0, shape)
    with pytest.raises(ConfigError, match="18 address bits"):
        P.neuron_address(0, 0, 0, (1024, 64, 64))


# ---- readout ---------------------------------------------------------------------------
def test_decode_readout_value_bits():
    s = P.decode_readout_value((1 << 20) | (3 << 16) | 0x00AB)
    assert s == P.ReadoutSample(valid=True, index=3, payload=0xAB)
    assert P.decode_readout_value(0) == P.ReadoutSample(False, 0, 0)
    with pytest.raises(ValueError, match="21-bit"):
        P.decode_readout_value(1 << 21)


def test_readout_channel_erratum_and_classes():
    assert [P.readout_core_channel(k) for k in (1, 2, 15)] == [0, 4, 56]
    assert P.readout_core_channel(2, erratum=False) == 1
    with pytest.raises(ValueError, match="idle"):
        P.readout_core_channel(0)
    ro = ReadoutConfig(num_classes=3, channel_erratum=True)
    assert [P.readout_class(i, ro) for i in range(5)] == [None, 0, 1, 2, None]
    assert P.readout_votes([1, 1, 0, 3, 7, 2], ro).tolist() == [2, 1, 1]


# ---- classes and decision time ---------------------------------------------------------
def _chip_events(rows):
    out = np.zeros(len(rows), dtype=CHIP_EVENT_DTYPE)
    for i, (core, feature, t) in enumerate(rows):
        out[i]["core"], out[i]["feature"], out[i]["t"] = core, feature, t
    return out


def test_class_counts_use_readout_channels():
    image = readout_image(3, num_classes=3)  # classes on channels 0, 4, 8
    ev = _chip_events([(3, 0, 1), (3, 4, 2), (3, 4, 3), (3, 1, 4), (3, 8, 5), (2, 4, 6)])
    assert P.class_counts(ev, image).tolist() == [1, 2, 1]  # channel 1 and core 2 ignored
    plain = random_image((2, 3, 4), seed=1)  # no readout: class k = channel k of core 4
    assert P.class_counts(_chip_events([(4, 2, 1), (4, 2, 2), (3, 0, 3)]), plain).tolist() == [0, 0, 2]


def test_decision_time_is_when_final_leader_takes_over_for_good():
    image = random_image((2, 3, 4), seed=1)
    ev = _chip_events([(4, 0, 10), (4, 1, 20), (4, 1, 30), (4, 0, 40), (4, 0, 50), (4, 2, 60)])
    # running argmax: 0,0(tie->0),1,0(tie),0,0 -> final 0, leading since t=40
    assert P.decision_time_us(ev, image) == 40
    assert P.decision_time_us(_chip_events([]), image) is None
    assert P.decision_time_us(_chip_events([(4, 2, 7)]), image) == 7


# ---- devkit selection --------------------------------------------------------------------
def _dev(name, serial, addr, bus=1):
    return P.DeviceDescriptor(name, serial, bus, addr)


def test_select_devkit_by_index_in_usb_order_and_by_serial():
    devs = [_dev("Speck2eDevKit", "B", 9), _dev("DVXplorer", "X", 1), _dev("Speck2eDevKit", "A", 3)]
    assert P.select_devkit(devs).serial == "A"
    assert P.select_devkit(devs, index=1).serial == "B"
    assert P.select_devkit(devs, serial="B").usb_address == 9


def test_select_devkit_errors_say_what_to_check():
    with pytest.raises(BackendUnavailable, match=r"no Speck2e devkit found.*DVXplorer.*USB") as e:
        P.select_devkit([_dev("DVXplorer", "X", 1)])
    assert "samna version" in str(e.value)
    with pytest.raises(BackendUnavailable, match="devices samna sees: none"):
        P.select_devkit([])
    devs = [_dev("Speck2eDevKit", "A", 3)]
    with pytest.raises(BackendUnavailable, match=r"index 2 out of range: 1 Speck2e"):
        P.select_devkit(devs, index=2)
    with pytest.raises(BackendUnavailable, match=r"serial 'Z'.*serial A"):
        P.select_devkit(devs, serial="Z")


# ---- bounded wait ----------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_collect_stops_when_quiet():
    fc = FakeClock()
    batches = iter([[1, 2], [3], []])
    got = P.collect_until_quiet(lambda: next(batches), min_wait_s=0.5, quiet_s=0.1, timeout_s=5,
                                clock=fc.clock, sleep=fc.sleep)
    assert got.items == [1, 2, 3] and not got.timed_out
    assert fc.sleeps[0] == 0.5 and got.waited_s == pytest.approx(0.7)


def test_collect_never_hangs_on_a_chattering_chip():
    fc = FakeClock()
    got = P.collect_until_quiet(lambda: [0], min_wait_s=0.2, quiet_s=0.1, timeout_s=1.0,
                                clock=fc.clock, sleep=fc.sleep)
    assert got.timed_out and got.waited_s == pytest.approx(1.0)
    assert 9 <= len(got.items) <= 10  # one read after the first wait, then one per 0.1 s poll


def test_collect_caps_the_first_wait_and_checks_arguments():
    fc = FakeClock()
    got = P.collect_until_quiet(lambda: [], min_wait_s=30, quiet_s=0.1, timeout_s=2,
                                clock=fc.clock, sleep=fc.sleep)
    assert fc.sleeps[0] == 2 and got.timed_out
    with pytest.raises(ConfigError):
        P.collect_until_quiet(lambda: [], min_wait_s=0, quiet_s=0, timeout_s=1)


def test_states_from_neuron_values_roundtrip_and_range():
    shape = (3, 4, 4)
    addr = P.core_neuron_addresses(shape)
    values = np.arange(addr.size) - 5
    states, seen = P.states_from_neuron_values(addr, values, shape)
    assert seen.all() and states.shape == shape
    c, x, y = P.neuron_cxy(int(addr[7]), shape)
    assert states[c, y, x] == values[7]
    part, seen = P.states_from_neuron_values(addr[:3], values[:3], shape)
    assert seen.sum() == 3 and part[~seen].sum() == 0
    with pytest.raises(ValueError, match="outside the map"):
        P.states_from_neuron_values([P.neuron_address(3, 0, 0, (4, 4, 4))], [1], shape)
