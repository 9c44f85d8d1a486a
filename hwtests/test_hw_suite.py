"""The hardware-in-the-loop suite: the same checks on every selected backend.

Run ``pytest hwtests`` (simulator), ``pytest hwtests --backend speck2e`` (devkit) or
``--backend both``; or ``flexsnn hwtest`` for a JSON + markdown report. The reference for
every comparison is the asynchronous simulator evaluated with an independent event order
(breadth-first), so the checks mean something on the simulator backend too.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flexsnn.converters.chip_image import check_chip_image
from flexsnn.converters.samna_config import plan_samna_config
from flexsnn.data.events import make_events
from flexsnn.deploy.async_sim import AsyncSimulator
from flexsnn.deploy.evaluate import evaluate_dataset
from flexsnn.hwtests.images import (
    DETERMINISTIC_CORES,
    identity_image,
    random_events,
    random_image,
    readout_image,
)

DET_SETS = [(2, 3, 4), (5, 6, 7), (8, 3, 6)]
STOCHASTIC_SETS = [(0, 1, 5)]
SEEDS = [0, 1]


def reference_run(image, events):
    """The simulator's result with every core recorded and breadth-first event order."""
    sim = AsyncSimulator(record_all=True, order="breadth-first")
    sim.load(image)
    return sim.run(events)


def per_core(events, core):
    """Core ``core``'s events as an ordered list of (x, y, feature)."""
    sel = events[events["core"] == core]
    return list(zip(sel["x"].tolist(), sel["y"].tolist(), sel["feature"].tolist()))


def _suite_images():
    images = [identity_image(c) for c in DETERMINISTIC_CORES]
    images += [random_image(cs, seed=s) for cs in DET_SETS + STOCHASTIC_SETS for s in SEEDS]
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


# ---- agreement with the simulator -----------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cores", DET_SETS, ids=lambda c: "cores" + "-".join(map(str, c)))
def test_agreement_exact_on_deterministic_cores(backend_name, open_backend, cores, seed, suite, hw_metrics):
    """Random integer images on cores 2-8: every core's output events equal the simulator's."""
    image = random_image(cores, seed=seed)
    events = random_events(seed=100 + seed, n=int(suite["agreement"]["events"]), size=(8, 8))
    ref = reference_run(image, events)
    got = open_backend(image).run(events)
    assert sum(ref.spike_counts.values()) > events.size // 4, "test image too quiet to compare"
    for core in cores:
        assert Counter(per_core(got.events, core)) == Counter(per_core(ref.events, core)), f"core {core}"
    assert got.class_counts.tolist() == ref.class_counts.tolist()
    hw_metrics.update(spikes={int(k): int(v) for k, v in ref.spike_counts.items()})


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cores", STOCHASTIC_SETS, ids=lambda c: "cores" + "-".join(map(str, c)))
def test_agreement_statistical_on_cores_0_1(backend_name, open_backend, cores, seed, suite, hw_metrics):
    """Cores 0 and 1 run in parallel on the chip: per-core spike totals within tolerance."""
    cfg = suite["agreement"]
    image = random_image(cores, seed=seed)
    events = random_events(seed=200 + seed, n=int(cfg["events"]), size=(8, 8))
    ref = reference_run(image, events)
    got = open_backend(image).run(events)
    rel, tol = float(cfg["stochastic_rel_tolerance"]), float(cfg["stochastic_abs_tolerance"])
    for core in cores:
        r = int(np.count_nonzero(ref.events["core"] == core))
        g = int(np.count_nonzero(got.events["core"] == core))
        hw_metrics[f"core{core}"] = {"simulator": r, "backend": g}
        assert abs(g - r) <= rel * r + tol, f"core {core}: {g} spikes vs simulator {r}"


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
def test_nmnist_accuracy(backend_name, open_backend, exported_image, nmnist_test_set, simulator_reference,
                         suite, hw_metrics):
    """Exported checkpoint on the test set: accuracy >= threshold and |backend - simulator| <= bound."""
    acc_cfg = suite["accuracy"]
    result = evaluate_dataset(open_backend(exported_image, record_all=False), nmnist_test_set)
    ref = simulator_reference
    gap = abs(result.accuracy - ref.accuracy)
    hw_metrics.update(
        accuracy=result.accuracy, simulator_accuracy=ref.accuracy, gap_to_simulator=gap,
        threshold=float(acc_cfg["threshold"]), max_gap=float(acc_cfg["max_gap_to_simulator"]),
        samples=result.samples, agreement_with_simulator=float(np.mean(result.predictions == ref.predictions)),
        throughput_samples_per_s=result.samples_per_s,
        latency_to_decision_ms_median=None if result.latency_us_median is None else result.latency_us_median / 1000,
        no_decision=result.no_decision)
    assert result.accuracy >= float(acc_cfg["threshold"]), \
        f"accuracy {result.accuracy:.3f} < threshold {acc_cfg['threshold']}"
    assert gap <= float(acc_cfg["max_gap_to_simulator"]), \
        f"|{result.accuracy:.3f} - simulator {ref.accuracy:.3f}| = {gap:.3f} > {acc_cfg['max_gap_to_simulator']}"
