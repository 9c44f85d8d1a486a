"""The hardware-in-the-loop suite: the same checks on every selected backend.

Run ``pytest hwtests`` (simulator), ``pytest hwtests --backend reference`` (the independent
plain-Python simulator standing in for the device), ``--backend speck2e`` (devkit) or
``--backend both``; or ``flexsnn hwtest`` for a JSON + markdown report. Every comparison is
with a run the backend under test was not derived from (the ``comparison_backend`` fixture:
the reference for the simulator, the simulator for the reference and the devkit), and the
suite images include branches and merges, where the depth-first event order changes results,
so a broken simulator rule makes the suite fail without hardware (tests/test_hw_suite_fails.py).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flexsnn.converters.chip_image import check_chip_image
from flexsnn.converters.samna_config import plan_samna_config
from flexsnn.data.events import make_events
from flexsnn.deploy.evaluate import evaluate_dataset
from flexsnn.deploy.reference_sim import ReferenceBackend
from flexsnn.hwtests.images import (
    DETERMINISTIC_CORES,
    branch_merge_image,
    identity_image,
    random_events,
    random_image,
    readout_image,
)

DET_SETS = [(2, 3, 4), (5, 6, 7), (8, 3, 6)]
STOCHASTIC_SETS = [(0, 1, 5)]
SEEDS = [0, 1]
#: Image kinds of the agreement tests: a plain chain, and a branch that merges again.
KINDS = {"chain": random_image, "merge": branch_merge_image}


def per_core(events, core):
    """Core ``core``'s events as an ordered list of (x, y, feature)."""
    sel = events[events["core"] == core]
    return list(zip(sel["x"].tolist(), sel["y"].tolist(), sel["feature"].tolist()))


def _suite_images():
    images = [identity_image(c) for c in DETERMINISTIC_CORES]
    images += [make(cs, seed=s) for make in KINDS.values() for cs in DET_SETS + STOCHASTIC_SETS for s in SEEDS]
    images.append(readout_image(3))
    return images


# ---- configuration ---------------------------------------------------------------------------
def test_configuration_passes_our_validator(hw_metrics):
    """Every suite image passes the ChipImage validator and maps onto samna config fields."""
    images = _suite_images()
    for image in images:
        check_chip_image(image)
        plan = plan_samna_config(image, monitor="all")
        assert [lp.core for lp in plan.cnn_layers] == image.core_order()
        for lp in plan.cnn_layers:
            core = image.core(lp.core)
            assert lp.weights.shape == (core.weights.shape[0], core.weights.shape[1], core.kernel_size, core.kernel_size)
            assert lp.threshold_high == core.threshold_high and lp.threshold_low == core.threshold_low
    hw_metrics["images"] = len(images)


@pytest.mark.slow
@pytest.mark.realdata
def test_exported_image_passes_validators(exported_image):
    check_chip_image(exported_image)
    plan = plan_samna_config(exported_image)
    assert plan.monitored_cores == (exported_image.output_core,)


def test_samna_validates_configuration(hw_metrics):
    """``samna.speck2e.validate_configuration`` accepts every suite image (needs samna)."""
    from flexsnn._optional import samna_status

    ok, reason = samna_status()
    if not ok:
        pytest.skip(f"samna unusable: {reason}")
    from flexsnn.converters.samna_config import build_samna_config, validate_samna_config

    for image in _suite_images():
        config, _plan = build_samna_config(image, monitor="all")
        valid, message = validate_samna_config(config)
        assert valid, f"{image.source}: samna says {message}"


# ---- identity per core ---------------------------------------------------------------------
@pytest.mark.parametrize("core", DETERMINISTIC_CORES)
def test_single_neuron_identity(backend_name, open_backend, core, suite, hw_metrics):
    """weight = threshold on a 1x1 kernel: exactly one output spike per input spike, same place."""
    if core not in suite["identity"]["cores"]:
        pytest.skip(f"core {core} not in suite identity.cores")
    image = identity_image(core)
    events = random_events(seed=core, n=int(suite["identity"]["events"]), size=(8, 8))
    result = open_backend(image).run(events)
    out = result.events[result.events["core"] == core]
    hw_metrics.update(inputs=int(events.size), outputs=int(out.size))
    assert out.size == events.size
    assert per_core(result.events, core) == list(zip(events["x"].tolist(), events["y"].tolist(), [0] * events.size))
    assert np.all(out["t"] >= events["t"])  # causality, in the input's time base


# ---- agreement with a run the backend was not derived from ---------------------------------
def test_suite_images_exercise_the_event_order(hw_metrics):
    """The merge images give different outputs under depth-first and breadth-first order, so the
    agreement tests below can see a wrong event-order rule (a plain chain cannot)."""
    differ = 0
    for cores in DET_SETS:
        for seed in SEEDS:
            image = branch_merge_image(cores, seed=seed)
            events = random_events(seed=100 + seed, n=400, size=(8, 8))
            outs = []
            for order in ("depth-first", "breadth-first"):
                ref = ReferenceBackend(order=order, record_all=True)
                ref.load(image)
                outs.append(Counter(per_core(ref.run(events).events, cores[2])))
            differ += outs[0] != outs[1]
    hw_metrics["merge_images_where_order_matters"] = differ
    assert differ >= 1


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cores", DET_SETS, ids=lambda c: "cores" + "-".join(map(str, c)))
def test_agreement_exact_on_deterministic_cores(backend_name, open_backend, comparison_backend, cores, seed,
                                                kind, suite, hw_metrics):
    """Random integer images (chains and branch-merges) on cores 2-8: every core's output events
    equal the comparison run's (the reference for sim; the simulator for reference/devkit)."""
    image = KINDS[kind](cores, seed=seed)
    events = random_events(seed=100 + seed, n=int(suite["agreement"]["events"]), size=(8, 8))
    cmp_backend = comparison_backend(image)
    ref = cmp_backend.run(events)
    got = open_backend(image).run(events)
    assert sum(ref.spike_counts.values()) > events.size // 4, "test image too quiet to compare"
    for core in cores:
        assert Counter(per_core(got.events, core)) == Counter(per_core(ref.events, core)), \
            f"core {core}: {backend_name} differs from {cmp_backend.name}"
    assert got.class_counts.tolist() == ref.class_counts.tolist()
    hw_metrics.update(compared_with=cmp_backend.name, spikes={int(k): int(v) for k, v in ref.spike_counts.items()})


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cores", STOCHASTIC_SETS, ids=lambda c: "cores" + "-".join(map(str, c)))
def test_agreement_statistical_on_cores_0_1(backend_name, open_backend, comparison_backend, cores, seed, kind,
                                            suite, hw_metrics):
    """Cores 0 and 1 run in parallel on the chip: per-core spike totals within tolerance."""
    cfg = suite["agreement"]
    image = KINDS[kind](cores, seed=seed)
    events = random_events(seed=200 + seed, n=int(cfg["events"]), size=(8, 8))
    cmp_backend = comparison_backend(image)
    ref = cmp_backend.run(events)
    got = open_backend(image).run(events)
    rel, tol = float(cfg["stochastic_rel_tolerance"]), float(cfg["stochastic_abs_tolerance"])
    hw_metrics["compared_with"] = cmp_backend.name
    for core in cores:
        r = int(np.count_nonzero(ref.events["core"] == core))
        g = int(np.count_nonzero(got.events["core"] == core))
        hw_metrics[f"core{core}"] = {"comparison": r, "backend": g}
        assert abs(g - r) <= rel * r + tol, f"core {core}: {g} spikes vs {cmp_backend.name} {r}"


def test_agreement_on_the_given_chip(backend_name, open_backend, comparison_backend, given_chip, suite,
                                     hw_metrics):
    """``--chip``: random events on the image's own sensor give the same output-core events as the
    comparison run (exactly for deterministic backends; totals within tolerance on the devkit)."""
    if given_chip is None:
        pytest.skip("no --chip given")
    from flexsnn.deploy.async_sim import input_sensor

    sensor = input_sensor(given_chip)
    events = random_events(seed=300, n=int(suite["agreement"]["events"]), size=(sensor.height, sensor.width))
    if sensor.polarities == 1:
        events["p"] = 0
    cmp_backend = comparison_backend(given_chip, record_all=False)
    ref = cmp_backend.run(events)
    got = open_backend(given_chip, record_all=False).run(events)
    out = given_chip.output_core
    hw_metrics.update(compared_with=cmp_backend.name, output_spikes=int(ref.spike_counts.get(out, 0)))
    if backend_name == "speck2e":
        cfg = suite["agreement"]
        r, g = int(ref.class_counts.sum()), int(got.class_counts.sum())
        assert abs(g - r) <= float(cfg["stochastic_rel_tolerance"]) * r + float(cfg["stochastic_abs_tolerance"])
    else:
        assert Counter(per_core(got.events, out)) == Counter(per_core(ref.events, out)), \
            f"output core {out}: {backend_name} differs from {cmp_backend.name}"


# ---- readout ------------------------------------------------------------------------------
@pytest.mark.parametrize("winner", [0, 1, 2])
def test_readout_class_follows_the_input(backend_name, open_backend, winner, hw_metrics):
    """Readout image (class k on core channel 4k, Speck2e erratum): input on row k -> class k,
    from the spike counts and, where the backend has the readout block, from its votes too."""
    image = readout_image(3, num_classes=3)
    rng = np.random.default_rng(winner)
    n = 300
    t = np.sort(rng.integers(0, 300_000, n))
    events = make_events(rng.integers(0, 4, n), np.full(n, winner), rng.integers(0, 2, n), t)
    result = open_backend(image, record_all=False).run(events)
    assert result.prediction == winner and result.class_counts[winner] == n
    votes = result.extras.get("readout_votes")
    if votes is not None:
        hw_metrics["readout_votes"] = np.asarray(votes).tolist()
        assert int(np.argmax(votes)) == winner and int(np.sum(votes)) > 0


# ---- reset --------------------------------------------------------------------------------
@pytest.mark.parametrize("cores", DET_SETS[:2], ids=lambda c: "cores" + "-".join(map(str, c)))
def test_same_sample_twice_same_output(backend_name, open_backend, cores):
    """A, then B, then A again: A's outputs repeat exactly (the state is reset per sample)."""
    image = random_image(cores, seed=7)
    a = random_events(seed=7, n=300, size=(8, 8))
    b = random_events(seed=8, n=300, size=(8, 8))
    backend = open_backend(image)
    first = backend.run(a)
    backend.run(b)
    again = backend.run(a)
    for core in cores:
        assert per_core(again.events, core) == per_core(first.events, core), f"core {core}"


def test_reset_zeroes_every_neuron(backend_name, open_backend, hw_metrics):
    """After a sample the neurons hold charge; reset() returns every one of them to 0."""
    image = random_image((2, 3, 4), seed=9)
    backend = open_backend(image)
    backend.run(random_events(seed=9, n=300, size=(8, 8)))
    charged = sum(int(np.count_nonzero(v)) for v in backend.neuron_states().values())
    backend.reset()
    states = backend.neuron_states()
    hw_metrics.update(charged_before_reset=charged)
    assert charged > 0, "the sample left no charge: the check would be vacuous"
    assert sorted(states) == sorted(c.core for c in image.cores)
    for core, v in states.items():
        assert v.shape == tuple(image.core(core).output_shape) and not np.any(v), f"core {core}"


# ---- N-MNIST accuracy ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
def test_nmnist_accuracy(backend_name, open_backend, comparison_backend, exported_image, nmnist_test_set,
                         suite, hw_metrics):
    """Exported checkpoint (or ``--chip``) on the test set: accuracy >= threshold, and the gap to
    a differently configured run (``gap_to_simulator``: the reference for sim, the simulator for
    the reference and the devkit) <= bound. Runs involving the slow reference use
    ``accuracy.reference_samples`` samples."""
    acc_cfg = suite["accuracy"]
    cmp_backend = comparison_backend(exported_image, record_all=False)
    slow = "reference" in (backend_name, cmp_backend.name)
    limit = int(acc_cfg.get("reference_samples", 8)) if slow else None
    result = evaluate_dataset(open_backend(exported_image, record_all=False), nmnist_test_set, limit=limit)
    ref = evaluate_dataset(cmp_backend, nmnist_test_set, limit=limit)
    gap = abs(result.accuracy - ref.accuracy)
    hw_metrics.update(
        accuracy=result.accuracy, simulator_accuracy=ref.accuracy, compared_with=cmp_backend.name,
        gap_to_simulator=gap, threshold=float(acc_cfg["threshold"]), max_gap=float(acc_cfg["max_gap_to_simulator"]),
        samples=result.samples, agreement_with_simulator=float(np.mean(result.predictions == ref.predictions)),
        throughput_samples_per_s=result.samples_per_s,
        latency_to_decision_ms_median=None if result.latency_us_median is None else result.latency_us_median / 1000,
        no_decision=result.no_decision)
    assert result.accuracy >= float(acc_cfg["threshold"]), \
        f"accuracy {result.accuracy:.3f} < threshold {acc_cfg['threshold']}"
    assert gap <= float(acc_cfg["max_gap_to_simulator"]), \
        f"|{result.accuracy:.3f} - {cmp_backend.name} {ref.accuracy:.3f}| = {gap:.3f} > {acc_cfg['max_gap_to_simulator']}"
