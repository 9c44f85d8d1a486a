"""Hand-computed single-core cases of the asynchronous simulator, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from chip_builders import core, single_core_image
from flexsnn.converters.chip_image import ChipImage, InputConfig, ReadoutConfig, with_core
from flexsnn.data.events import make_events
from flexsnn.deploy.async_sim import AsyncSimulator, SimConfig, SimulationError, input_sensor
from flexsnn.deploy.backend import Backend
from flexsnn.errors import ChipConstraintError, ConfigError, EventFormatError


def ev(xs, ys, ps=None, ts=None):
    n = len(xs)
    return make_events(xs, ys, ps if ps is not None else [0] * n, ts if ts is not None else range(n))


def sim_of(image, **opts):
    s = AsyncSimulator(**opts)
    s.load(image)
    return s


def test_is_a_backend():
    s = AsyncSimulator()
    assert isinstance(s, Backend) and s.deterministic and not s.real_time and s.name == "async"


def test_one_event_through_a_known_kernel_with_padding():
    w = np.arange(1, 10).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    s = sim_of(single_core_image(w, (1, 5, 6), padding=(1, 1), thr_high=100))
    r = s.run(ev([2], [1]))  # column 2, row 1
    expected = np.zeros((5, 6), int)
    # neuron (yo, xo) gets w[ky, kx] with ky = y + 1 - yo, kx = x + 1 - xo
    expected[0, 1:4] = [9, 8, 7]
    expected[1, 1:4] = [6, 5, 4]
    expected[2, 1:4] = [3, 2, 1]
    np.testing.assert_array_equal(s.neuron_states()[0][0], expected)
    assert r.synops == {0: 9} and r.spike_counts == {0: 0} and r.events.size == 0
    # corner event: padding 1 -> only 4 neurons reached
    r = s.run(ev([0], [0]))
    st = s.neuron_states()[0][0]
    assert r.synops[0] == 4
    assert (st[0, 0], st[0, 1], st[1, 0], st[1, 1]) == (5, 4, 2, 1)


@pytest.mark.parametrize("reset,spike_events,final", [("subtract", [1, 3, 4], 0), ("zero", [1, 3], 3)])
def test_threshold_and_reset(reset, spike_events, final):
    # v: 3, 6 -> spike, ... (threshold 5)
    s = sim_of(single_core_image([[[[3]]]], (1, 1, 1), thr_high=5, reset=reset))
    r = s.run(ev([0] * 5, [0] * 5, ts=[0, 10, 20, 30, 40]))
    assert list(r.events["t"]) == [10 * i for i in spike_events]
    assert s.neuron_states()[0][0, 0, 0] == final


def test_floor_threshold_low():
    w = np.zeros((1, 2, 1, 1), int)
    w[0, 0], w[0, 1] = -4, 7
    s = sim_of(single_core_image(w, (2, 1, 1), thr_high=8, thr_low=-10))
    r = s.run(ev([0] * 6, [0] * 6, ps=[0, 0, 0, 1, 1, 1]))
    # -4, -8, -10 (floor), -3, 4, 11 -> spike -> 3
    assert r.spike_counts[0] == 1 and s.neuron_states()[0][0, 0, 0] == 3
    s = sim_of(single_core_image(w, (2, 1, 1), thr_high=8, thr_low=-20))
    r = s.run(ev([0] * 6, [0] * 6, ps=[0, 0, 0, 1, 1, 1]))
    # -4, -8, -12, -5, 2, 9 -> spike -> 1
    assert r.spike_counts[0] == 1 and s.neuron_states()[0][0, 0, 0] == 1


def test_saturation_vs_wrap():
    img = single_core_image([[[[127]]]], (1, 1, 1), thr_high=32767, thr_low=-32768)
    n = 259  # 127 * 258 = 32766; the 259th event overflows
    s = sim_of(img)
    r = s.run(ev([0] * n, [0] * n))
    assert r.spike_counts[0] == 1 and list(r.events["t"]) == [n - 1]
    assert s.neuron_states()[0][0, 0, 0] == 0
    s = sim_of(img, saturate=False)
    r = s.run(ev([0] * n, [0] * n))
    assert r.spike_counts[0] == 0 and s.neuron_states()[0][0, 0, 0] == 127 * n - 65536


def test_single_vs_multi_spike():
    img = single_core_image([[[[12]]]], (1, 1, 1), thr_high=5)
    s = sim_of(img)
    r = s.run(ev([0, 0], [0, 0]))
    assert r.spike_counts[0] == 2 and s.neuron_states()[0][0, 0, 0] == 14  # 12->7, 19->14
    s = sim_of(img, spike="multi")
    r = s.run(ev([0, 0], [0, 0]))
    assert r.spike_counts[0] == 2 + 2 and s.neuron_states()[0][0, 0, 0] == 4  # 12->2, 14->4


def test_stride():
    # k=1, stride 2: 5x7 -> 3x4; odd positions reach nothing
    s = sim_of(single_core_image([[[[1]]]], (1, 5, 7), stride=(2, 2), thr_high=1))
    r = s.run(ev([1, 4, 6], [1, 2, 4], ts=[0, 1, 2]))
    assert r.synops[0] == 2
    assert [(e["x"], e["y"]) for e in r.events] == [(2, 1), (3, 2)]
    # k=3, stride (2, 1), no padding: 5x5 -> 2x3; event (y=2, x=2) reaches rows 0,1, cols 0..2
    w = np.arange(1, 10).reshape(1, 1, 3, 3)
    s = sim_of(single_core_image(w, (1, 5, 5), stride=(2, 1), thr_high=100))
    r = s.run(ev([2], [2]))
    st = s.neuron_states()[0][0]
    # yo=0: ky=2; yo=1: ky=0. xo=0: kx=2, xo=1: kx=1, xo=2: kx=0
    np.testing.assert_array_equal(st, [[9, 8, 7], [3, 2, 1]])
    assert r.synops[0] == 6


def _pool_image(pool, in_hw=(4, 5)):
    c0 = core(0, (1, *in_hw), [[[[1]]]], thr_high=1, dests=[(1, pool)])
    c1 = core(1, (1, in_hw[0] // pool, in_hw[1] // pool), [[[[1]]]], thr_high=100, layer=1)
    return ChipImage(input=InputConfig((1, *in_hw), (0,)), cores=(c0, c1), output_core=1)


def test_sum_pooling_one_event_per_source_spike():
    s = sim_of(_pool_image(2), record_all=True)
    # the 2x2 block at rows 0-1, columns 2-3, twice the same pixel, and column 4 (cut off)
    r = s.run(ev([2, 3, 2, 3, 3, 4], [0, 0, 1, 1, 1, 0]))
    st = s.neuron_states()[1][0]
    np.testing.assert_array_equal(st, [[0, 5], [0, 0]])
    assert r.spike_counts == {0: 6, 1: 0}
    assert r.synops == {0: 6, 1: 5}  # the spike at column 4 is dropped by floor pooling
    assert set(np.unique(r.events["core"])) == {0}


def test_two_destinations_and_depth_first_order():
    # core 0 -> core 1 (pool 1) and core 2 (pool 2); core 1 -> core 2? no: 1 and 2 are leaves
    c0 = core(0, (1, 2, 2), [[[[1]]]], thr_high=1, dests=[(1, 1), (2, 2)])
    c1 = core(1, (1, 2, 2), [[[[1]]]], thr_high=1, layer=1)
    c2 = core(2, (1, 1, 1), [[[[1]]]], thr_high=1, layer=2)
    img = ChipImage(input=InputConfig((1, 2, 2), (0,)), cores=(c0, c1, c2), output_core=2)
    s = sim_of(img, record_all=True)
    r = s.run(ev([1, 0], [0, 1], ts=[5, 9]))
    got = [(int(e["core"]), int(e["x"]), int(e["y"]), int(e["t"])) for e in r.events]
    assert got == [(0, 1, 0, 5), (1, 1, 0, 5), (2, 0, 0, 5), (0, 0, 1, 9), (1, 0, 1, 9), (2, 0, 0, 9)]


def test_input_pooling_and_merged_polarities():
    img = single_core_image([[[[1]]]], (1, 2, 3), thr_high=100, input_pooling=2, merge_polarities=True)
    assert input_sensor(img) == (6, 4, 2)
    s = sim_of(img)
    s.run(ev([0, 1, 5, 4], [0, 1, 3, 2], ps=[0, 1, 1, 0]))
    np.testing.assert_array_equal(s.neuron_states()[0][0], [[2, 0, 0], [0, 0, 2]])


def test_readout_erratum_mapping():
    w = np.zeros((5, 1, 1, 1), int)
    w[4] = 1  # only channel 4 fires
    img = single_core_image(w, (1, 1, 1), thr_high=1, readout=ReadoutConfig(2, channel_erratum=True))
    r = sim_of(img).run(ev([0], [0]))
    assert list(r.class_counts) == [0, 1] and r.prediction == 1
    img = single_core_image(w, (1, 1, 1), thr_high=1, readout=ReadoutConfig(2, channel_erratum=False))
    r = sim_of(img).run(ev([0], [0]))
    assert list(r.class_counts) == [0, 0] and r.prediction == -1
    r = sim_of(single_core_image(w, (1, 1, 1), thr_high=1)).run(ev([0], [0]))
    assert list(r.class_counts) == [0, 0, 0, 0, 1]


def test_leak_on_slow_clock_ticks():
    img = single_core_image([[[[0]]]], (1, 1, 1), thr_high=5, biases=[2], leak=True)
    s = sim_of(img, leak_period_us=1000)
    r = s.run(ev([0, 0], [0, 0], ts=[0, 5000]))
    # ticks at 1000..5000: 2, 4, 6 -> spike -> 1, 3, 5 -> spike -> 0
    assert list(r.events["t"]) == [3000, 5000] and r.synops[0] == 2
    s = sim_of(img, leak_period_us=2500)
    r = s.run(ev([0, 0], [0, 0], ts=[0, 5000]))
    assert r.events.size == 0 and s.neuron_states()[0][0, 0, 0] == 4


def test_state_is_reset_between_samples():
    s = sim_of(single_core_image([[[[3]]]], (1, 1, 1), thr_high=5))
    a = s.run(ev([0], [0]))
    b = s.run(ev([0], [0]))
    assert a.spike_counts == b.spike_counts == {0: 0}


def test_empty_input():
    s = sim_of(single_core_image([[[[3]]]], (1, 1, 1), thr_high=5))
    r = s.run(make_events([], [], [], []))
    assert r.events.size == 0 and r.prediction == -1 and r.input_events == 0


@pytest.mark.parametrize("bad,field", [
    (ev([6], [0]), "x"),       # outside the 6-wide input
    (ev([0], [4]), "y"),
    (ev([0], [0], ps=[1]), "p"),  # one-channel input: polarity 1 is invalid
    (ev([0, 1], [0, 0], ts=[5, 3]), "t"),
])
def test_invalid_events_refused_before_running(bad, field):
    s = sim_of(single_core_image([[[[1]]]], (1, 4, 6), thr_high=100))
    s.run(ev([1], [1]))
    before = s.neuron_states()[0].copy()
    with pytest.raises(EventFormatError) as err:
        s.run(bad)
    assert err.value.field == field
    np.testing.assert_array_equal(s.neuron_states()[0], before)  # nothing ran


def test_invalid_chip_image_refused():
    img = single_core_image([[[[1]]]], (1, 4, 6), thr_high=100)
    bad = with_core(img, 0, threshold_high=40000, padding=(9, 9))
    with pytest.raises(ChipConstraintError) as err:
        AsyncSimulator().load(bad)
    fields = {v.field for v in err.value.violations}
    assert {"thresholds", "padding_y", "padding_x"} <= fields
    with pytest.raises(ConfigError):
        AsyncSimulator().run(ev([0], [0]))  # nothing loaded
    with pytest.raises(ConfigError):
        SimConfig(spike="double")
    with pytest.raises(ConfigError):
        AsyncSimulator(spikes="multi")  # a typo is named, not swallowed


def test_runaway_feedback_stops_with_named_error():
    c0 = core(0, (1, 1, 1), [[[[1]]]], thr_high=1, dests=[(0, 1)])  # feeds itself
    img = ChipImage(input=InputConfig((1, 1, 1), (0,)), cores=(c0,), output_core=0)
    with pytest.raises(SimulationError):
        sim_of(img, max_cascade=1000).run(ev([0], [0]))
