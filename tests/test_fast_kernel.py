"""The fast kernel (default) equals the reference kernel (``kernel="reference"``, the previous
simulator) and the independent plain simulator (tests/sim_reference.py) bit for bit: output
events in order, spike and SynOps counts, per-channel counts and final neuron states, for every
rule variant, on random chains, on images with branches, merges and feedback, and on a
trained-like speck3c1fc image with real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from chip_builders import core, random_chain_image, random_events
from flexsnn.converters.chip_image import ChipImage, InputConfig, ReadoutConfig
from flexsnn.deploy import kernels_fast as KF
from flexsnn.deploy.async_sim import AsyncSimulator, SimConfig
from flexsnn.errors import ConfigError
from sim_reference import RULE_IDS, RULES, RefSim
from sim_reference import event_tuples as _tuples


def _run_both(image, events, **rules):
    """Run ``events`` with both kernels; assert everything equal; return the fast result."""
    out = {}
    for kernel in ("fast", "reference"):
        sim = AsyncSimulator(kernel=kernel, record_all=True, **rules)
        sim.load(image)
        res = sim.run(events)
        out[kernel] = (res, sim.neuron_states(), sim)
    (a, sa, sim_a), (b, sb, _) = out["fast"], out["reference"]
    assert sim_a._kernel == "fast"
    np.testing.assert_array_equal(a.events, b.events)
    assert a.spike_counts == b.spike_counts and a.synops == b.synops
    assert a.extras["channel_counts"] == b.extras["channel_counts"]
    np.testing.assert_array_equal(a.class_counts, b.class_counts)
    assert sa.keys() == sb.keys()
    for cid in sa:
        assert sa[cid].dtype == sb[cid].dtype == np.int32
        np.testing.assert_array_equal(sa[cid], sb[cid], err_msg=f"core {cid} state")
    return a


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_fast_equals_reference_and_plain_simulator_on_random_images(rules):
    spikes = 0
    for seed in range(16):
        image = random_chain_image(seed, leak=seed % 3 == 0, merge=seed % 2 == 0)
        c, h, w = image.input.shape
        events = random_events(seed, w, h, c, 150)
        got = _run_both(image, events, leak_period_us=300, **rules)
        ref_events, ref_counts, ref_synops = RefSim(image, leak_period_us=300, **rules).run(
            events, record_all=True)
        assert _tuples(got.events) == ref_events, f"seed {seed}"
        assert got.spike_counts == ref_counts and got.synops == ref_synops
        spikes += len(ref_events)
    assert spikes > 300


def _branch_merge_feedback_image(seed: int) -> ChipImage:
    """Input -> cores 0 and 1 (a branch); both -> core 2 (a merge); core 2 -> core 3 (readout,
    pooled) and core 2 <-> core 4 (a 2-core feedback cycle, weights leaning negative so that
    cascades end)."""
    rng = np.random.default_rng(seed)
    c0 = core(0, (2, 8, 8), rng.integers(-4, 10, (4, 2, 3, 3)), padding=(1, 1), thr_high=12,
              thr_low=-20, dests=[(2, 1)])
    c1 = core(1, (2, 8, 8), rng.integers(-3, 9, (4, 2, 1, 1)), thr_high=9, thr_low=-15,
              reset="zero", dests=[(2, 1)], layer=1)
    c2 = core(2, (4, 8, 8), rng.integers(-6, 8, (4, 4, 3, 3)), padding=(1, 1), thr_high=24,
              thr_low=-30, dests=[(3, 2), (4, 1)], layer=2)
    c4 = core(4, (4, 8, 8), rng.integers(-12, 8, (4, 4, 1, 1)), thr_high=8, thr_low=-12,
              dests=[(2, 1)], layer=3)
    c3 = core(3, (4, 4, 4), rng.integers(-3, 6, (8, 4, 4, 4)), thr_high=10, thr_low=-10, layer=4)
    return ChipImage(input=InputConfig((2, 8, 8), (0, 1)), cores=(c0, c1, c2, c3, c4),
                     output_core=3, readout=ReadoutConfig(2))


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_fast_equals_references_with_branches_merges_and_feedback(rules):
    spikes = 0
    for seed in range(5):
        image = _branch_merge_feedback_image(seed)
        events = random_events(seed, 8, 8, 2, 120)
        got = _run_both(image, events, **rules)
        ref_events, ref_counts, ref_synops = RefSim(image, **rules).run(events, record_all=True)
        assert _tuples(got.events) == ref_events, f"seed {seed}"
        assert got.spike_counts == ref_counts and got.synops == ref_synops
        spikes += got.spike_counts[4]
    assert spikes > 200  # the feedback cycle was active


def test_fast_equals_reference_with_saturation_wrap_and_floor_everywhere():
    """Large weights: states hit +-32768 (saturate or wrap) and the floor constantly."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        c0 = core(0, (2, 6, 6), rng.integers(-40, 128, (16, 2, 3, 3)), padding=(1, 1),
                  thr_high=32767, thr_low=-32768, dests=[(1, 2)])
        c1 = core(1, (16, 3, 3), rng.integers(-128, 128, (10, 16, 2, 2)), thr_high=200,
                  thr_low=-32768, layer=1)
        image = ChipImage(input=InputConfig((2, 6, 6), (0,)), cores=(c0, c1), output_core=1)
        events = random_events(seed, 6, 6, 2, 3000)
        for saturate in (True, False):
            for spike in ("single", "multi"):
                got = _run_both(image, events, saturate=saturate, spike=spike)
                assert got.spike_counts[0] > 0


def test_fast_equals_reference_on_trained_like_speck_chip(nmnist_small):
    """speck3c1fc exported from seeded weights (thresholds scaled for trained-like activity,
    as in benchmarks/sim_throughput.py) on real recordings."""
    import torch

    from flexsnn.converters.chip_image import with_core
    from flexsnn.converters.export import export_chip_image
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.models.zoo import build_model

    torch.manual_seed(0)
    image, _ = export_chip_image(build_model("speck3c1fc"))
    for c in image.cores:
        image = with_core(image, c.core, threshold_high=max(1, int(c.threshold_high * 0.8)))
    ds = load_event_dataset("nmnist", split="all", root=nmnist_small, seed=0, limit=4)
    synops = 0
    for i in range(len(ds)):
        for rules in (dict(), dict(order="breadth-first", spike="multi")):
            got = _run_both(image, ds[i][0], **rules)
            synops += got.total_synops
    assert synops > 1_000_000


def test_threshold_precondition_and_kernel_option():
    assert KF.fast_kernel_supports(10, -10) and KF.fast_kernel_supports(32767, -32768)
    assert not KF.fast_kernel_supports(5, 5) and not KF.fast_kernel_supports(40000, 0)
    with pytest.raises(ConfigError):
        SimConfig(kernel="turbo")
    assert SimConfig().kernel == "fast"


def test_footprint_tables_match_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        s = int(rng.integers(1, 4))
        p = int(rng.integers(0, k))
        n_in = int(rng.integers(k, 20))
        n_out = (n_in + 2 * p - k) // s + 1
        lo, hi = KF.footprint_tables(n_in, n_out, k, s, p)
        for i in range(n_in):
            reached = [o for o in range(n_out) if 0 <= i + p - o * s < k]
            if reached:
                assert (lo[i], hi[i]) == (reached[0], reached[-1])
            else:
                assert hi[i] < lo[i]
