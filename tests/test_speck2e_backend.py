"""Speck2e devkit backend: the thin samna layer, driven against the samna *test double*
(tests/doubles/samna_device_double.py). The double's "chip" is a per-test responder; what is
tested is the backend's own behaviour: discovery, open/close on every path, configuration,
slow clock, reset before each sample, relative timestamps, decoding, timeouts."""

from __future__ import annotations

import numpy as np
import pytest

import flexsnn.deploy.speck2e as sp
from doubles.samna_device_double import (
    DeviceInfoDouble,
    ReadoutPinValueDouble,
    SpikeDouble,
    WriteNeuronValueDouble,
    identity_responder,
    make_samna_double,
)
from flexsnn.converters.chip_image import with_core
from flexsnn.data.events import make_events
from flexsnn.deploy.backend import Backend
from flexsnn.errors import BackendUnavailable, ConfigError
from flexsnn.hwtests.images import identity_image, random_image, readout_image

FAST = dict(config_settle_s=0.0, quiet_s=0.01, timeout_s=1.0, start_delay_us=1000)


@pytest.fixture
def samna(monkeypatch):
    """Install a samna double with one Speck2e devkit (identity responder on core 3)."""
    def install(infos=None, responder=None, valid=(True, "")):
        infos = infos if infos is not None else [DeviceInfoDouble("Speck2eDevKit", "S1", 1, 4)]
        double = make_samna_double(infos, responder or identity_responder(3), valid)
        monkeypatch.setattr(sp, "_samna", lambda: double)
        return double

    return install


def _board(double):
    (board,) = double.state.opened.values()
    return board


def test_missing_samna_is_one_error_naming_the_hardware_extra():
    from flexsnn._optional import samna_status

    if samna_status()[0]:
        pytest.skip("the real samna is installed here")
    with pytest.raises(BackendUnavailable, match=r"flexsnn\[hardware\]") as err:
        sp.Speck2eBackend(identity_image(3))
    assert err.value.backend == "speck2e"
    ok, reason = sp.devkit_status()
    assert not ok and "samna" in reason


def test_identity_run_counts_resets_and_relative_timestamps(samna):
    double = samna()
    image = identity_image(3, size=(4, 4))
    ev = make_events([0, 3, 1], [1, 2, 3], [1, 0, 1], [50_000, 50_400, 51_000])
    with sp.Speck2eBackend(image, **FAST) as chip:
        assert isinstance(chip, Backend) and not chip.deterministic and chip.real_time
        res = chip.run(ev)
        board = _board(double)
        # configuration applied once, graph running, samna validation passed
        assert len(board.model.applied) == 1 and double.state.graphs[-1].running
        applied = board.model.applied[0]
        assert applied.cnn_layers[3].monitor_enable is True and applied.dvs_layer.pass_sensor_events is False
        # reset first: one WriteNeuronValue(0) per used neuron (1 x 4 x 4), then the spikes
        resets, spikes = board.written
        assert all(isinstance(e, WriteNeuronValueDouble) and e.neuron_state == 0 and e.layer == 3 for e in resets)
        assert sorted(e.address for e in resets) == list(range(16))
        assert [(s.layer, s.x, s.y, s.feature, s.timestamp) for s in spikes] == [
            (3, 0, 1, 1, 1000), (3, 3, 2, 0, 1400), (3, 1, 3, 1, 2000)]
        assert board.stop_watch.calls == ["reset", "start", "stop"]
        assert board.io.slow_clk is None  # no leak, no readout: slow clock left alone
    # one output per input, in the input's time base (+5 µs responder latency)
    assert res.events["core"].tolist() == [3, 3, 3] and res.events["t"].tolist() == [50_005, 50_405, 51_005]
    assert res.class_counts.tolist() == [3] and res.prediction == 0 and res.spike_counts == {3: 3}
    assert res.input_events == 3 and res.duration_us == 1000 and res.extras["timed_out"] is False
    assert res.extras["decision_time_us"] == 50_005 and res.extras["t0_us"] == 50_000
    assert board.closed and double.state.graphs[-1].stopped == 1


def test_second_sample_is_reset_again(samna):
    double = samna()
    ev = make_events([0], [0], [0], [0])
    with sp.Speck2eBackend(identity_image(3, size=(2, 2)), **FAST) as chip:
        chip.run(ev)
        chip.predict(ev)
        kinds = [type(batch[0]).__name__ for batch in _board(double).written]
    assert kinds == ["WriteNeuronValueDouble", "SpikeDouble"] * 2


def test_reapply_reset_mode_reapplies_zeroed_configuration(samna):
    double = samna()
    with sp.Speck2eBackend(identity_image(3, size=(2, 2)), reset="reapply", **FAST) as chip:
        chip.run(make_events([1], [1], [1], [10]))
        board = _board(double)
        assert len(board.model.applied) == 2
        assert not np.any(board.model.applied[-1].cnn_layers[3].neurons_initial_value)
        assert [type(b[0]).__name__ for b in board.written] == ["SpikeDouble"]


def test_non_square_maps_fall_back_to_reapply(samna):
    double = samna()
    with sp.Speck2eBackend(identity_image(3, size=(2, 8)), **FAST) as chip:
        chip.run(make_events([1], [1], [1], [10]))
        assert len(_board(double).model.applied) == 2  # reset by re-applying


def test_open_by_serial_and_index_and_discovery_errors(samna):
    infos = [DeviceInfoDouble("Speck2eDevKit", "B", 1, 9), DeviceInfoDouble("Speck2eDevKit", "A", 1, 2),
             DeviceInfoDouble("DVXplorer", "D", 1, 1)]
    samna(infos)
    with sp.Speck2eBackend(identity_image(3), serial="B", **FAST) as chip:
        assert chip.device.serial == "B" and chip.device.usb_address == 9
    with sp.Speck2eBackend(identity_image(3), device_index=0, **FAST) as chip:
        assert chip.device.serial == "A"
    with pytest.raises(BackendUnavailable, match="index 5 out of range"):
        sp.Speck2eBackend(identity_image(3), device_index=5, **FAST)
    assert [d.serial for d in sp.list_devkits()] == ["B", "A", "D"]
    assert sp.devkit_status()[0] in (True, False)
    samna([DeviceInfoDouble("DVXplorer", "D", 1, 1)])
    with pytest.raises(BackendUnavailable, match=r"no Speck2e devkit found.*DVXplorer.*USB 3"):
        sp.Speck2eBackend(identity_image(3), **FAST)


def test_open_failure_says_what_to_check(samna):
    double = samna()
    double.state.fail_open = RuntimeError("LIBUSB_ERROR_ACCESS")
    with pytest.raises(BackendUnavailable, match=r"could not open Speck2eDevKit \(serial S1.*LIBUSB_ERROR_ACCESS.*udev"):
        sp.Speck2eBackend(identity_image(3), **FAST)


def test_configuration_failure_closes_the_device(samna, monkeypatch):
    double = samna()
    original = double.device.open_device

    def open_failing(info):
        board = original(info)
        board.model.fail_apply = RuntimeError("configuration transfer failed")
        return board

    monkeypatch.setattr(double.device, "open_device", open_failing)
    with pytest.raises(BackendUnavailable, match=r"configuring Speck2eDevKit.*transfer failed.*samna version"):
        sp.Speck2eBackend(identity_image(3), **FAST)
    assert _board(double).closed


def test_samna_validation_failure_is_reported_before_opening(samna):
    double = samna(valid=(False, "layer 3: kernel memory exceeded"))
    with pytest.raises(BackendUnavailable, match="samna rejects the configuration.*kernel memory"):
        sp.Speck2eBackend(identity_image(3), **FAST)
    assert double.state.opened == {}


def test_exception_inside_with_block_still_closes(samna):
    double = samna()
    with pytest.raises(ZeroDivisionError):
        with sp.Speck2eBackend(identity_image(3), **FAST):
            1 / 0
    assert _board(double).closed
    chip = sp.Speck2eBackend(identity_image(3), **FAST)
    chip.close()
    chip.close()  # safe twice
    with pytest.raises(ConfigError, match="not loaded"):
        chip.run(make_events([0], [0], [0], [0]))


def test_chattering_chip_times_out_instead_of_hanging(samna):
    double = samna()
    with sp.Speck2eBackend(identity_image(3), config_settle_s=0, quiet_s=0.02, timeout_s=0.2) as chip:
        _board(double).chatter = True
        res = chip.run(make_events([0], [0], [0], [0]))
    assert res.extras["timed_out"] is True
    assert 0.2 <= res.extras["wall_s"] < 2.0
    assert res.events.size == 1  # the chatter comes from layer 99, not a monitored core


def test_leak_sets_the_slow_clock(samna):
    double = samna()
    image = with_core(identity_image(3), 3, leak_enabled=True, biases=np.array([-1], np.int16))
    with sp.Speck2eBackend(image, slow_clock_hz=250, **FAST):
        io = _board(double).io
        assert io.slow_clk is True and io.slow_clk_rate == 250


def test_readout_votes_decoded_with_erratum(samna):
    def respond(spikes):
        # class 1 spikes on channel 4 (erratum); the readout reports neuron index 2 (class 1) twice
        return [SpikeDouble(3, 0, 0, 4, s.timestamp + 1) for s in spikes] + \
               [ReadoutPinValueDouble(2, 10), ReadoutPinValueDouble(2, 20), ReadoutPinValueDouble(0, 30)]

    double = samna(responder=respond)
    with sp.Speck2eBackend(readout_image(3, num_classes=3), **FAST) as chip:
        res = chip.run(make_events([0, 1], [1, 1], [0, 0], [0, 5]))
        board = _board(double)
        assert board.io.slow_clk is True  # the readout needs the slow clock
        cfg = board.model.applied[0]
        assert cfg.readout.enable and cfg.cnn_layers[3].destinations[0].layer == 12
    assert res.class_counts.tolist() == [0, 2, 0] and res.prediction == 1
    assert res.extras["readout_votes"].tolist() == [0, 2, 0]


def test_monitor_all_counts_every_core(samna):
    def respond(spikes):
        return [SpikeDouble(2, 0, 0, 0, 1), SpikeDouble(3, 0, 0, 1, 2), SpikeDouble(4, 0, 0, 2, 3)]

    samna(responder=respond)
    with sp.Speck2eBackend(random_image((2, 3, 4), seed=0), monitor="all", **FAST) as chip:
        res = chip.run(make_events([0], [0], [0], [0]))
    assert res.spike_counts == {2: 1, 3: 1, 4: 1} and res.class_counts.tolist() == [0, 0, 1]


def test_options_are_validated(samna):
    samna()
    for bad in (dict(timeout_s=0), dict(quiet_s=-1), dict(start_delay_us=-5), dict(slow_clock_hz=0),
                dict(reset="random"), dict(device_index=-1)):
        with pytest.raises(ConfigError):
            sp.Speck2eOptions(**bad)
    with pytest.raises(ConfigError, match="speck2e option"):
        sp.Speck2eBackend(identity_image(3), timeout=3)


def test_neuron_states_read_back_and_reset_clears_them(samna):
    double = samna()
    with sp.Speck2eBackend(identity_image(3, size=(4, 4)), **FAST) as chip:
        before = chip.neuron_states()
        assert before[3].shape == (1, 4, 4) and np.all(before[3] == 17)  # the double's junk initial state
        chip.reset()
        assert not np.any(chip.neuron_states()[3])
        board = _board(double)
        board.junk_state = 5
        board.neurons.clear()
        board.receive = lambda events: board.written.append(list(events))  # a chip that never answers
        with pytest.raises(BackendUnavailable, match="16 of 16 neurons did not answer"):
            chip.neuron_states()


def test_importing_hardware_modules_never_imports_samna():
    import subprocess
    import sys

    code = ("import sys, flexsnn.deploy.speck2e, flexsnn.deploy.speck2e_protocol, "
            "flexsnn.converters.samna_config, flexsnn.commands.hwtest, flexsnn.hwtests.report; "
            "assert 'samna' not in sys.modules, 'samna imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_evaluate_dataset_and_factory_drive_the_devkit_backend(samna):
    from flexsnn.deploy.evaluate import evaluate_dataset
    from flexsnn.deploy.factory import make_backend

    samna()
    image = identity_image(3, size=(4, 4))
    data = [(make_events([0, 1], [0, 1], [0, 1], [1000 * i, 1000 * i + 300]), 0) for i in range(3)]
    with make_backend("speck2e", image=image, **FAST) as chip:
        assert isinstance(chip, sp.Speck2eBackend)
        result = evaluate_dataset(chip, data)
    assert result.accuracy == 1.0 and result.samples == 3 and result.no_decision == 0
    assert result.latency_us_median == 5.0  # the responder's latency, relative to each sample's start


def test_a_dropped_backend_still_closes_its_device(samna):
    import gc

    double = samna()
    chip = sp.Speck2eBackend(identity_image(3), **FAST)
    board, graph = _board(double), double.state.graphs[-1]
    del chip
    gc.collect()
    assert board.closed and not graph.running and len(double.state.closed) == 1
