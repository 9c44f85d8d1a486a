"""Runaway activity and memory-heavy options are stopped by name, never by the OOM killer:
a core that feeds itself, a 2-core cycle and thresholds of 1 stop at ``max_events`` (also under
an address-space cap, with the default sized to it); time-binned runs with a huge T are refused
with the memory estimate; ``--limit 0`` and too many ``--workers`` are handled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from chip_builders import core, nmnist_image, random_events
from flexsnn.cli import main
from flexsnn.converters.chip_image import ChipImage, InputConfig, with_core
from flexsnn.deploy.async_sim import AsyncSimulator, SimulationError, default_max_events
from flexsnn.deploy.evaluate import effective_workers, evaluate_dataset
from flexsnn.deploy.time_binned import TimeBinnedBackend
from flexsnn.errors import ConfigError

TESTS = Path(__file__).resolve().parent


def self_feeding_image() -> ChipImage:
    """Core 0 feeds itself: every event reaches 9 neurons at threshold 1 -> 9 new events."""
    c0 = core(0, (1, 4, 4), np.ones((1, 1, 3, 3)), padding=(1, 1), thr_high=1, thr_low=-1,
              dests=[(0, 1)])
    return ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0,), output_core=0)


def two_core_cycle_image() -> ChipImage:
    """Cores 0 <-> 1 (a cycle of gain 9); core 2 reads core 1 (the output core)."""
    c0 = core(0, (1, 4, 4), np.ones((1, 1, 3, 3)), padding=(1, 1), thr_high=1, thr_low=-1,
              dests=[(1, 1)])
    c1 = core(1, (1, 4, 4), np.ones((1, 1, 3, 3)), padding=(1, 1), thr_high=1, thr_low=-1,
              dests=[(0, 1), (2, 1)], layer=1)
    c2 = core(2, (1, 4, 4), np.ones((2, 1, 1, 1)), thr_high=1, thr_low=-1, layer=2)
    return ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0, c1, c2), output_core=2)


def _events(n=20):
    return random_events(0, 4, 4, 1, n)


@pytest.mark.parametrize("kernel", ["fast", "reference"])
@pytest.mark.parametrize("order", ["depth-first", "breadth-first"])
@pytest.mark.parametrize("build", [self_feeding_image, two_core_cycle_image])
def test_runaway_feedback_stops_at_max_events(kernel, order, build):
    sim = AsyncSimulator(kernel=kernel, order=order, max_events=50_000)
    sim.load(build())
    with pytest.raises(SimulationError, match="max_events=50,000") as err:
        sim.run(_events())
    assert "runs away" in str(err.value) and "--max-events" in str(err.value)


def test_bounded_feedback_still_runs_and_default_is_sized_to_memory():
    # the same self-loop with a threshold no single event reaches: no runaway, a normal result
    img = with_core(self_feeding_image(), 0, threshold_high=100)
    sim = AsyncSimulator(max_events=1000)
    sim.load(img)
    assert sim.run(_events()).spike_counts[0] == 0
    assert default_max_events() >= 100_000 and AsyncSimulator().max_events == default_max_events()
    with pytest.raises(ConfigError):
        AsyncSimulator(max_events=0)


_CAPPED = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {tests!r})
    cap = 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from test_runaway import {build}, _events
    from flexsnn.deploy.async_sim import AsyncSimulator, SimulationError
    sim = AsyncSimulator(kernel={kernel!r}, record_all=True, max_cascade=10**12)
    sim.load({build}())
    try:
        sim.run(_events(200))
    except SimulationError as err:
        print("NAMED:", err)
        sys.exit(0)
    print("FINISHED")
    sys.exit(1)
""")


@pytest.mark.parametrize("kernel", ["fast", "reference"])
@pytest.mark.parametrize("build", ["self_feeding_image", "two_core_cycle_image"])
def test_runaway_under_memory_cap_stops_by_name(kernel, build):
    """3 GiB of address space: the default guard (a quarter of it) stops the run with a named
    error before numpy runs out of memory (without the guard: MemoryError or the OOM killer)."""
    code = _CAPPED.format(tests=str(TESTS), build=build, kernel=kernel)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NAMED:" in r.stdout and "max_events" in r.stdout, r.stdout


def test_thresholds_of_one_stop_async_and_time_binned(nmnist_small):
    """Every threshold_high = 1 on an N-MNIST image: both backends stop with a named error."""
    from flexsnn.data.registry import load_event_dataset

    img = nmnist_image(1)
    for c in img.cores:
        img = with_core(img, c.core, threshold_high=1)
    events = load_event_dataset("nmnist", split="all", root=nmnist_small, limit=1)[0][0]
    sim = AsyncSimulator(spike="multi", max_events=20_000)
    sim.load(img)
    with pytest.raises(SimulationError, match="max_events"):
        sim.run(events)
    tb = TimeBinnedBackend(10, max_events=20_000)
    tb.load(img)
    with pytest.raises(SimulationError, match="max_events"):
        tb.run(events)


def test_time_binned_huge_T_refused_with_estimate_or_chunked():
    img = nmnist_image(1)
    with pytest.raises(ConfigError, match=r"GiB") as err:
        TimeBinnedBackend(100_000_000).load(img)
    assert "--T" in str(err.value)
    tb = TimeBinnedBackend(10, batch_size=50)
    tb.load(img)
    per_sample = tb.memory_per_sample_bytes()
    assert 0 < per_sample < 50 * 2**20 and tb._samples_per_pass() == 50
    big = TimeBinnedBackend(20_000, batch_size=10_000)
    big.load(img)
    assert 1 <= big._samples_per_pass() < 10_000  # cut to fit the budget


def test_simulate_cli_refusals(tmp_path, capsys):
    chip = nmnist_image(1).save(tmp_path / "m.chip")
    for args, field in ((["--limit", "0"], "--limit"), (["--workers", "0"], "--workers"),
                        (["--max-events", "0"], "--max-events"),
                        (["--backend", "time-binned", "--T", "100000000"], "T")):
        assert main(["simulate", "--chip", str(chip), *args]) != 0
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err


def test_simulate_cli_speed_workers_cap_and_runaway(tmp_path, capsys, nmnist_small):
    chip = nmnist_image(1).save(tmp_path / "m.chip")
    code = main(["simulate", "--chip", str(chip), "--dataset", "nmnist", "--root", str(nmnist_small),
                 "--limit", "3", "--workers", "100", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0 and "SynOps / s" in out and "samples / s" in out
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert doc["workers"] == effective_workers(100, 3) <= 3
    # an N-MNIST-shaped image whose second core feeds itself: named error, exit != 0
    c0 = core(0, (2, 34, 34), np.ones((1, 2, 3, 3)), padding=(1, 1), thr_high=1, thr_low=-1,
              dests=[(1, 1)])
    c1 = core(1, (1, 34, 34), np.ones((1, 1, 3, 3)), padding=(1, 1), thr_high=1, thr_low=-1,
              dests=[(1, 1)], layer=1)
    loop = ChipImage(input=InputConfig((2, 34, 34), (0,)), cores=(c0, c1), output_core=1)
    chip = loop.save(tmp_path / "loop.chip")
    code = main(["simulate", "--chip", str(chip), "--dataset", "nmnist", "--root", str(nmnist_small),
                 "--limit", "1", "--max-events", "100000", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code != 0 and "max_events=100,000" in err and "Traceback" not in err, err


def test_workers_capped_at_samples_and_cores():
    import os

    assert effective_workers(100, 20) == min(20, os.cpu_count() or 1)
    assert effective_workers(4, 1) == 1 and effective_workers(1, 0) == 1
    img = nmnist_image(1)
    sim = AsyncSimulator()
    sim.load(img)
    data = [(random_events(i, 34, 34, 2, 50), i % 10) for i in range(3)]
    res = evaluate_dataset(sim, data, workers=100)
    assert res.workers == min(3, os.cpu_count() or 1) and res.samples == 3
