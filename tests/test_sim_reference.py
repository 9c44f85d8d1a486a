"""The compiled simulator equals the independent slow reference (tests/sim_reference.py) on
random small chip images and random event streams; each numba kernel equals its reference."""

from __future__ import annotations

import numpy as np
import pytest

from chip_builders import random_chain_image, random_events
from flexsnn.deploy import kernels as K
from flexsnn.deploy.async_sim import AsyncSimulator, map_input_events, pack_image
from sim_reference import RULE_IDS, RULES, RefSim
from sim_reference import event_tuples as _as_tuples


def _events_for(image, seed, n=150):
    c, h, w = image.input.shape
    return random_events(seed, w, h, c, n)


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_simulator_equals_reference_on_random_images(rules):
    compared_spikes = 0
    for seed in range(12):
        image = random_chain_image(seed, leak=seed % 3 == 0)
        events = _events_for(image, seed)
        sim = AsyncSimulator(record_all=True, leak_period_us=300, **rules)
        sim.load(image)
        got = sim.run(events)
        ref_events, ref_counts, ref_synops = RefSim(image, leak_period_us=300, **rules).run(
            events, record_all=True)
        assert _as_tuples(got.events) == ref_events, f"seed {seed}"
        assert got.spike_counts == ref_counts and got.synops == ref_synops, f"seed {seed}"
        compared_spikes += len(ref_events)
    assert compared_spikes > 200  # the comparison saw real activity


def test_depth_first_and_breadth_first_differ_only_with_merges():
    differ = 0
    for seed in range(40):
        image = random_chain_image(seed, n_cores=3, merge=True)
        merged = any(len(c.destinations) == 2 for c in image.cores)
        events = _events_for(image, seed, 120)
        out = {}
        for order in ("depth-first", "breadth-first"):
            sim = AsyncSimulator(record_all=True, order=order)
            sim.load(image)
            r = sim.run(events)
            ref = RefSim(image, order=order).run(events, record_all=True)[0]
            assert _as_tuples(r.events) == ref
            out[order] = sorted(_as_tuples(r.events))
        if not merged:
            assert out["depth-first"] == out["breadth-first"]
        elif out["depth-first"] != out["breadth-first"]:
            differ += 1
    assert differ >= 1  # with merges the order rule matters (and both orders match the reference)


def test_comparison_is_sensitive_to_each_rule():
    """Against a reference run with a different rule, the simulator's output differs."""
    for other in (dict(spike="multi"), dict(update_order="position-major")):
        mismatches = 0
        for seed in range(12):
            image = random_chain_image(seed)
            events = _events_for(image, seed)
            sim = AsyncSimulator(record_all=True)
            sim.load(image)
            ref = RefSim(image, **other).run(events, record_all=True)[0]
            mismatches += _as_tuples(sim.run(events).events) != ref
        assert mismatches >= 1, other


def _random_core_case(rng):
    c_out, c_in, k = (int(v) for v in rng.integers(1, 5, 3))
    sy, sx = (int(v) for v in rng.choice([1, 2, 4], 2))
    py, px = (int(v) for v in rng.integers(0, k, 2))
    h_in, w_in = (int(v) for v in rng.integers(k, 10, 2))
    h_out = (h_in + 2 * py - k) // sy + 1
    w_out = (w_in + 2 * px - k) // sx + 1
    state = rng.integers(-300, 300, (c_out, h_out, w_out)).astype(np.int32)
    weights = rng.integers(-128, 128, (c_out, c_in, k, k)).astype(np.int8)
    thr = int(rng.integers(1, 200))
    args = (c_in, c_out, h_out, w_out, k, sy, sx, py, px, int(rng.integers(0, c_in)),
            int(rng.integers(0, h_in)), int(rng.integers(0, w_in)), thr, -int(rng.integers(0, 400)),
            bool(rng.integers(0, 2)), bool(rng.integers(0, 2)), bool(rng.integers(0, 2)),
            bool(rng.integers(0, 2)))
    return state, weights, args


def test_footprint_update_kernel_equals_numpy_reference():
    rng = np.random.default_rng(7)
    for _ in range(300):
        state, weights, args = _random_core_case(rng)
        outs = []
        for fn in (K.footprint_update, K.footprint_update_ref):
            # the core's block sits inside larger flat arrays, at offsets
            flat = np.concatenate([np.full(7, 99, np.int32), state.ravel(), np.full(5, 99, np.int32)])
            wflat = np.concatenate([np.full(3, 1, np.int8), weights.ravel(), np.full(4, 1, np.int8)])
            bufs = [np.full(args[1] * args[4] ** 2, -1, np.int64) for _ in range(4)]
            m, ops = fn(flat, 7, wflat, 3, *args, *bufs)
            st = flat[7:7 + state.size].reshape(state.shape)
            assert (flat[:7] == 99).all() and (flat[7 + state.size:] == 99).all()
            outs.append((st, m, ops, [b[:m].tolist() for b in bufs]))
        (s1, m1, o1, b1), (s2, m2, o2, b2) = outs
        np.testing.assert_array_equal(s1, s2)
        assert (m1, o1, b1) == (m2, o2, b2)


def test_leak_update_kernel_equals_numpy_reference():
    rng = np.random.default_rng(8)
    for _ in range(100):
        c, h, w = (int(v) for v in rng.integers(1, 6, 3))
        state = rng.integers(-32768, 32768, (c, h, w)).astype(np.int32)
        biases = rng.integers(-128, 128, c).astype(np.int16)
        args = (c, h, w, int(rng.integers(1, 300)), -int(rng.integers(0, 32768)),
                bool(rng.integers(0, 2)), bool(rng.integers(0, 2)), bool(rng.integers(0, 2)))
        res = []
        for fn in (K.leak_update, K.leak_update_ref):
            flat = np.concatenate([np.full(3, 7, np.int32), state.ravel()])
            b = np.concatenate([np.full(2, 50, np.int16), biases])
            bufs = [np.full(state.size, -1, np.int64) for _ in range(4)]
            m = fn(flat, 3, b, 2, *args, *bufs)
            res.append((flat.copy(), m, [x[:m].tolist() for x in bufs]))
        np.testing.assert_array_equal(res[0][0], res[1][0])
        assert res[0][1:] == res[1][1:]


def test_run_events_kernel_equals_python_reference():
    for seed in range(4):
        image = random_chain_image(100 + seed, leak=True)
        pk = pack_image(image)
        events = _events_for(image, seed, 80)
        outs = []
        for fn in (K.run_events, K.run_events_ref):
            state = np.zeros(pk.n_state, np.int32)
            r = fn(*map_input_events(events, image), pk.input_dests, pk.geom, pk.weights, pk.w_off,
                   pk.biases, pk.b_off, state, pk.s_off, pk.dests, np.int64(200),
                   np.ones(len(pk.core_ids), np.uint8), bool(seed % 2), True, False, False,
                   np.int64(10 ** 6))
            rec, n_rec = r[0], r[1]
            outs.append((rec[:, :n_rec].tolist(), [np.asarray(a).tolist() for a in r[2:]], state.tolist()))
        assert outs[0] == outs[1]


def test_input_pooling_merged_polarities_and_two_input_destinations_equal_reference():
    from chip_builders import core
    from flexsnn.converters.chip_image import ChipImage, InputConfig, ReadoutConfig

    for seed in range(6):
        rng = np.random.default_rng(seed)
        shape = (1, 4, 5)
        c0 = core(0, shape, rng.integers(-3, 9, (2, 1, 3, 3)), padding=(1, 1), thr_high=6,
                  thr_low=-8, dests=[(2, 1)])
        c1 = core(1, shape, rng.integers(-3, 9, (2, 1, 3, 3)), padding=(1, 1), thr_high=7,
                  thr_low=-8, reset="zero", dests=[(2, 1)], layer=1)
        c2 = core(2, (2, 4, 5), rng.integers(-2, 6, (5, 2, 2, 2)), thr_high=5, thr_low=-5, layer=2)
        image = ChipImage(input=InputConfig(shape, (0, 1), pooling=2, merge_polarities=True),
                          cores=(c0, c1, c2), output_core=2, readout=ReadoutConfig(2))
        events = random_events(seed, 10, 8, 2, 200)
        for order in ("depth-first", "breadth-first"):
            sim = AsyncSimulator(record_all=True, order=order)
            sim.load(image)
            got = sim.run(events)
            ref_events, ref_counts, ref_synops = RefSim(image, order=order).run(events, record_all=True)
            assert _as_tuples(got.events) == ref_events and len(ref_events) > 20
            assert got.spike_counts == ref_counts and got.synops == ref_synops
            out = [e for e in ref_events if e[0] == 2]
            assert list(got.class_counts) == [sum(e[3] == 0 for e in out), sum(e[3] == 4 for e in out)]
