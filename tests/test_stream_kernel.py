"""The stream kernel (``kernel="fast"`` on feed-forward images, only the output core recorded)
equals the event-loop kernel, the reference kernel and the independent plain simulator bit for
bit: output events in order, spike, SynOps and per-channel counts and final neuron states, for
every rule variant, on random chains (with and without leak), on trees (branches, two input
destinations, two destinations into one core), on a trained-like speck3c1fc image with real
recordings; images it cannot take run on the event loop, and samples near a limit are rerun
there so that the limits act exactly as before."""

from __future__ import annotations

import numpy as np
import pytest

from chip_builders import core, random_chain_image, random_events
from flexsnn.converters.chip_image import ChipImage, InputConfig, ReadoutConfig
from flexsnn.deploy import kernels_stream as KS
from flexsnn.deploy.async_sim import AsyncSimulator, SimulationError
from sim_reference import RULE_IDS, RULES, RefSim
from sim_reference import event_tuples as _tuples


def _run_all(image, events, *, path="stream", **rules):
    """Run ``events`` on the fast, event-loop and reference kernels (output core recorded);
    assert everything equal and that the fast kernel took ``path``; return the fast result."""
    out = {}
    for kernel in ("fast", "event", "reference"):
        sim = AsyncSimulator(kernel=kernel, **rules)
        sim.load(image)
        out[kernel] = (sim.run(events), sim.neuron_states(), sim.last_path)
    a, sa, p = out["fast"]
    assert p == path
    assert out["event"][2] == "event" and out["reference"][2] == "reference"
    for kernel in ("event", "reference"):
        b, sb, _ = out[kernel]
        np.testing.assert_array_equal(a.events, b.events, err_msg=kernel)
        assert a.spike_counts == b.spike_counts and a.synops == b.synops, kernel
        assert a.extras["channel_counts"] == b.extras["channel_counts"], kernel
        np.testing.assert_array_equal(a.class_counts, b.class_counts)
        assert sa.keys() == sb.keys()
        for cid in sa:
            np.testing.assert_array_equal(sa[cid], sb[cid], err_msg=f"{kernel}: core {cid} state")
    return a


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_stream_equals_every_kernel_and_plain_simulator_on_random_chains(rules):
    spikes = ticks = 0
    for seed in range(16):
        image = random_chain_image(seed, leak=seed % 3 == 0, merge=False)
        c, h, w = image.input.shape
        events = random_events(seed, w, h, c, 150)
        got = _run_all(image, events, leak_period_us=300, **rules)
        ref_events, ref_counts, ref_synops = RefSim(image, leak_period_us=300, **rules).run(events)
        assert _tuples(got.events) == ref_events, f"seed {seed}"
        assert got.spike_counts == ref_counts and got.synops == ref_synops
        spikes += len(ref_events)
        ticks += seed % 3 == 0
    assert spikes > 300 and ticks >= 5


def _tree_image(seed: int, *, leak: bool, same_core_twice: bool = False) -> ChipImage:
    """Input -> core 0 and core 5 (two input destinations). Core 0 -> core 1 (pool 2) and
    core 2 (a branch nobody reads); core 1 -> core 3 (output, readout); core 5 -> core 4.
    ``same_core_twice``: core 0's second destination is core 1 again (pool 2 twice)."""
    rng = np.random.default_rng(seed)
    b = (lambda n: rng.integers(-4, 5, n)) if leak else (lambda n: None)
    d0 = [(1, 2), (1, 2)] if same_core_twice else [(1, 2), (2, 1)]
    cores = [
        core(0, (2, 8, 8), rng.integers(-4, 10, (4, 2, 3, 3)), padding=(1, 1), thr_high=12,
             thr_low=-20, dests=d0, biases=b(4), leak=leak),
        core(1, (4, 4, 4), rng.integers(-5, 9, (6, 4, 3, 3)), stride=(2, 2), padding=(1, 1),
             thr_high=15, thr_low=-15, reset="zero", dests=[(3, 1)], biases=b(6), leak=leak, layer=1),
        core(3, (6, 2, 2), rng.integers(-3, 8, (8, 6, 2, 2)), thr_high=10, thr_low=-10, biases=b(8),
             leak=leak, layer=2),
        core(5, (2, 8, 8), rng.integers(-3, 9, (3, 2, 1, 1)), thr_high=9, thr_low=-15, dests=[(4, 1)],
             layer=1),
        core(4, (3, 8, 8), rng.integers(-3, 9, (2, 3, 2, 2)), stride=(2, 2), thr_high=9,
             thr_low=-15, biases=b(2), leak=leak, layer=2),
    ]
    if not same_core_twice:
        cores.append(core(2, (4, 8, 8), rng.integers(-3, 9, (2, 4, 1, 1)), thr_high=9, thr_low=-15,
                          biases=b(2), leak=leak, layer=1))
    return ChipImage(input=InputConfig((2, 8, 8), (0, 5)), cores=tuple(cores), output_core=3,
                     readout=ReadoutConfig(2))


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_stream_equals_every_kernel_on_trees(rules):
    spikes = 0
    for seed in range(6):
        for leak in (False, True):
            image = _tree_image(seed, leak=leak)
            events = random_events(seed, 8, 8, 2, 200)
            got = _run_all(image, events, leak_period_us=200, **rules)
            assert _tuples(got.events) == RefSim(image, leak_period_us=200, **rules).run(events)[0]
            spikes += sum(got.spike_counts.values())
    assert spikes > 500


def test_stream_with_two_destinations_into_one_core():
    try:
        image = _tree_image(0, leak=True, same_core_twice=True)
        AsyncSimulator().load(image)
    except Exception as e:  # the chip checks may refuse it; then there is nothing to test
        pytest.skip(f"image with one core twice as destination refused: {e}")
    for seed in range(4):
        image = _tree_image(seed, leak=True, same_core_twice=True)
        events = random_events(seed, 8, 8, 2, 200)
        for rules in (dict(), dict(spike="multi", order="breadth-first")):
            _run_all(image, events, leak_period_us=200, **rules)


def test_merges_feedback_and_record_all_take_the_event_loop():
    merged = random_chain_image(1, n_cores=3, merge=True)
    assert len(merged.core(0).destinations) == 2  # the skip connection merges into core 2
    events = random_events(1, *merged.input.shape[2:0:-1], merged.input.shape[0], 100)
    _run_all(merged, events, path="event")
    chain = random_chain_image(1, merge=False)
    sim = AsyncSimulator(record_all=True)
    sim.load(chain)
    sim.run(random_events(1, *chain.input.shape[2:0:-1], chain.input.shape[0], 50))
    assert sim.last_path == "event"


def test_limits_act_as_on_the_event_loop():
    """A sample that may come near a limit is rerun on the event loop, which decides exactly:
    the same error where it applies, the same result where it does not."""
    image = _tree_image(1, leak=False)
    events = random_events(1, 8, 8, 2, 300)
    full = AsyncSimulator()
    full.load(image)
    full.run(events)
    assert full.last_path == "stream"
    for cfg in (dict(max_cascade=3), dict(max_events=40)):
        errors = []
        for kernel in ("fast", "event"):
            sim = AsyncSimulator(kernel=kernel, **cfg)
            sim.load(image)
            with pytest.raises(SimulationError) as err:
                sim.run(events)
            errors.append(str(err.value))
        assert errors[0] == errors[1]
    # limits the event loop never reaches but the stream kernel's bound does: same result
    for cfg in (dict(max_cascade=60), dict(max_events=5000)):
        res = {}
        for kernel in ("fast", "event"):
            sim = AsyncSimulator(kernel=kernel, **cfg)
            sim.load(image)
            res[kernel] = (sim.run(events), sim.last_path)
        assert res["fast"][1] == "event"
        np.testing.assert_array_equal(res["fast"][0].events, res["event"][0].events)
        assert res["fast"][0].spike_counts == full.run(events).spike_counts


def test_stream_equals_event_loop_on_trained_like_speck_chip(nmnist_small):
    """speck3c1fc exported from seeded weights, thresholds scaled for trained-like activity
    (as benchmarks/sim_throughput.py), on real recordings, every rule variant."""
    import torch

    from flexsnn.converters.chip_image import with_core
    from flexsnn.converters.export import export_chip_image
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.models.zoo import build_model

    torch.manual_seed(0)
    image, _ = export_chip_image(build_model("speck3c1fc"))
    for c in image.cores:
        image = with_core(image, c.core, threshold_high=max(1, int(c.threshold_high * 0.8)))
    ds = load_event_dataset("nmnist", split="all", root=nmnist_small, seed=0, limit=2)
    synops = 0
    for rules in RULES:
        sims = {}
        for kernel in ("fast", "event"):
            sims[kernel] = AsyncSimulator(kernel=kernel, **rules)
            sims[kernel].load(image)
        for i in range(len(ds)):
            a, b = (sims[k].run(ds[i][0]) for k in ("fast", "event"))
            assert sims["fast"].last_path == "stream"
            np.testing.assert_array_equal(a.events, b.events)
            assert a.spike_counts == b.spike_counts and a.synops == b.synops
            assert a.extras["channel_counts"] == b.extras["channel_counts"]
            sa, sb = sims["fast"].neuron_states(), sims["event"].neuron_states()
            assert all(np.array_equal(sa[c], sb[c]) for c in sa)
            synops += a.total_synops
    assert synops > 5_000_000


def test_expanded_weights_and_lane_tables_match_the_definition():
    rng = np.random.default_rng(0)
    for k, s in ((1, 1), (3, 1), (3, 2), (4, 3), (5, 2)):
        w = rng.integers(-128, 128, (3, 2, k, k))
        nd = -(-k // s)
        wx = KS.expanded_weights(w, s).reshape(2, k, k, nd, 3)
        for ci, ky, kx0, d, co in np.ndindex(wx.shape):
            kx = kx0 - d * s
            assert wx[ci, ky, kx0, d, co] == (w[co, ci, ky, kx] if kx >= 0 else 0)
        lx, lc = KS.lane_tables(3, k, s)
        assert list(lx) == [r // 3 for r in range(nd * 3)] and list(lc) == [r % 3 for r in range(nd * 3)]
    assert KS.stream_plan([[-1], [0], [0], [1]]) and not KS.stream_plan([[-1], [-1, 0]])
    assert not KS.stream_plan([[-1], [2], [1]]) and not KS.stream_plan([[-1], []])


@pytest.mark.parametrize("thr_high,thr_low", [(1, 0), (1, -32768), (40, 0), (32767, -32768)])
def test_stream_at_extreme_thresholds(thr_high, thr_low):
    """The ends of the chip's threshold ranges (1 <= thr_high, thr_low <= 0): spikes on every
    update, a floor at the initial state 0, and (thr_high 32767: a 3x3 map, large weights,
    many events) states that saturate or wrap at the 16-bit ends."""
    big = thr_high == 32767
    n = 3 if big else 7
    spikes = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        c0 = core(0, (2, n, n), rng.integers(-20, 128 if big else 40, (10, 2, 3, 3)), padding=(1, 1),
                  thr_high=thr_high, thr_low=thr_low, dests=[(1, 2)])
        k1 = n // 2 - (0 if big else 1)
        c1 = core(1, (10, n // 2, n // 2), rng.integers(-30, 60, (3, 10, k1, k1)), thr_high=thr_high,
                  thr_low=thr_low, reset="zero" if seed % 2 else "subtract", layer=1)
        image = ChipImage(input=InputConfig((2, n, n), (0,)), cores=(c0, c1), output_core=1)
        events = random_events(seed, n, n, 2, 3000 if big else 120)
        multi = [dict(spike="multi")] if thr_high > 1 else []  # (thr 1: millions of spikes)
        for rules in [dict(), dict(saturate=False, update_order="position-major"), *multi]:
            got = _run_all(image, events, **rules)
            assert _tuples(got.events) == RefSim(image, **rules).run(events)[0]
            spikes += got.spike_counts[0]
    assert spikes > 0
