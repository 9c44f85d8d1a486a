"""Conversion without silent loss (issue 17, item 6): neuron parameters the chip cannot express
are refused by name; a trailing pooling is applied on the way to the output or refused; zero-reset
neurons work end to end; weights reaching the threshold warn; threshold rounding is reported."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from doubles.samna_device_double import SpeckConfigurationDouble
from flexsnn.cli import main
from flexsnn.converters.chip_image import with_core
from flexsnn.converters.chip_model import chip_ready_model, run_chip_model
from flexsnn.converters.discretize import discretized_chip_model
from flexsnn.converters.export import export_chip_image, threshold_rounding
from flexsnn.converters.onnx_export import export_onnx, run_onnx
from flexsnn.converters.samna_config import apply_plan, plan_samna_config
from flexsnn.data.events import make_events
from flexsnn.deploy.async_sim import AsyncSimulator
from flexsnn.deploy.time_binned import TimeBinnedBackend
from flexsnn.errors import ChipConstraintError
from sim_reference import RefSim


def iaf(**kw) -> sl.IAFSqueeze:
    kw.setdefault("min_v_mem", -1.0)
    return sl.IAFSqueeze(batch_size=1, **kw)


def _conv(c_in, c_out, k=3, pad=1, seed=0, scale=0.5):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, k, padding=pad, bias=False)
    with torch.no_grad():
        conv.weight.uniform_(-0.2 * scale, scale)
    return conv


def _events(shape, n=300, seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = shape
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, c, n),
                       np.sort(rng.integers(0, 100_000, n)))


# --------------------------------------------------------------------------- refused by name
def test_neuron_parameters_the_chip_cannot_express_are_refused_by_name():
    model = nn.Sequential(
        _conv(2, 4), sl.IAFSqueeze(batch_size=1, tau_syn=2.0, min_v_mem=-1.0),
        _conv(4, 4), sl.LIFSqueeze(tau_mem=10.0, batch_size=1, min_v_mem=-1.0),
        _conv(4, 4), iaf(spike_fn=sa.MaxSpike(2)),
        _conv(4, 4), iaf(reset_fn=sa.MembraneReset(reset_value=0.5)),
        _conv(4, 4), iaf(reset_fn=sa.MembraneSubtract(subtract_value=0.5)),
    )
    with pytest.raises(ChipConstraintError) as err:
        chip_ready_model(model, input_shape=(2, 8, 8))
    got = {(v.where.split()[2], v.field) for v in err.value.violations}
    assert got == {("1", "tau_syn"), ("3", "neuron leak"), ("5", "spike_fn"), ("7", "reset_fn.reset_value"),
                   ("9", "reset_fn.subtract_value")}
    text = str(err.value)
    assert "IAFSqueeze" in text and "LIFSqueeze(tau_mem=10)" in text and "no synaptic filter" in text


def test_tau_syn_refused_on_the_cli_without_a_traceback(tmp_path, capsys):
    import nir

    # a NIR graph cannot carry tau_syn on an IF; the Python path is the one that could lose it
    with pytest.raises(ChipConstraintError, match="tau_syn"):
        export_chip_image(nn.Sequential(_conv(2, 4), sl.IAF(tau_syn=5.0, min_v_mem=-1.0)), input_shape=(2, 8, 8))
    w = _conv(2, 4).weight.detach().numpy()
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv": nir.Conv2d(input_shape=(8, 8), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(4)),
        "lif": nir.LIF(tau=np.full((4, 8, 8), 5.0), r=np.ones((4, 8, 8)), v_leak=np.zeros((4, 8, 8)),
                       v_threshold=np.ones((4, 8, 8))),
        "output": nir.Output(output_type={"output": np.array([4, 8, 8])})},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "output")])
    nir.write(str(tmp_path / "lif.nir"), graph)
    assert main(["export", "--from-nir", str(tmp_path / "lif.nir"), "--out", str(tmp_path / "x.chip")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "leak (tau)" in err


# --------------------------------------------------------------------------- trailing pooling
def test_trailing_pooling_is_applied_on_the_way_to_the_output():
    model = nn.Sequential(_conv(2, 4, scale=0.9), iaf(), sl.SumPool2d(2))
    image, report = export_chip_image(model, input_shape=(2, 8, 8))
    assert image.notes["output_pooling"] == "2" and report.extra["output_pooling"] == 2
    assert image.core(image.output_core).output_shape == (4, 8, 8)
    # the chip-ready model (with its pooling) and the image agree on the per-channel counts
    T = 8
    tb = TimeBinnedBackend(T, spike="multi")
    tb.load(image)
    ev = _events((2, 8, 8), seed=1)
    counts = tb.run(ev).class_counts
    chip = discretized_chip_model(report.extra["chip_model"], report.extra["chip_layers"], report.extra["discrete"])
    x = torch.from_numpy(tb.frames(ev))[:, None]
    out = run_chip_model(chip, x).detach().reshape(T, 1, 4, 4, 4)  # pooled (4, 4, 4) map
    assert counts.sum() > 0
    np.testing.assert_array_equal(counts, out.sum(dim=(0, 1, 3, 4)).numpy().astype(np.int64))


def test_trailing_pooling_that_cuts_rows_is_refused():
    model = nn.Sequential(_conv(2, 4), iaf(), sl.SumPool2d(2))
    with pytest.raises(ChipConstraintError) as err:
        export_chip_image(model, input_shape=(2, 9, 9))
    assert "trailing pooling" in str(err.value) and "2×2 on a 9×9 map" in str(err.value)


# --------------------------------------------------------------------------- zero reset end to end
def zero_reset_net() -> nn.Sequential:
    return nn.Sequential(_conv(2, 4, seed=1, scale=0.9), iaf(reset_fn=sa.MembraneReset()), sl.SumPool2d(2),
                         _conv(4, 6, seed=2, scale=0.9), iaf(reset_fn=sa.MembraneReset(), min_v_mem=-0.5))


def test_zero_reset_converter_time_binned_and_samna_config():
    image, report = export_chip_image(zero_reset_net(), input_shape=(2, 16, 16))
    assert [c.reset_mode for c in image.cores] == ["zero", "zero"]
    # time-binned backend == the discretized chip-ready model (sinabs MembraneReset) on the same frames
    T = 10
    tb = TimeBinnedBackend(T, spike="multi")
    tb.load(image)
    ev = _events((2, 16, 16), n=600, seed=3)
    counts = tb.run(ev).class_counts
    chip = discretized_chip_model(report.extra["chip_model"], report.extra["chip_layers"], report.extra["discrete"])
    x = torch.from_numpy(tb.frames(ev))[:, None]
    out = run_chip_model(chip, x).detach().reshape(T, 1, 6, 8, 8)
    assert counts.sum() > 0
    np.testing.assert_array_equal(counts, out.sum(dim=(0, 1, 3, 4)).numpy().astype(np.int64))
    # with subtract instead of zero the counts differ: the flag reaches the backend
    sub = image
    for c in image.cores:
        sub = with_core(sub, c.core, reset_mode="subtract")
    tb.load(sub)
    assert not np.array_equal(tb.run(ev).class_counts, counts)
    config = apply_plan(plan_samna_config(image), SpeckConfigurationDouble())
    assert all(config.cnn_layers[c.core].return_to_zero for c in image.cores)


def test_zero_reset_asynchronous_simulator_matches_the_reference():
    image, _ = export_chip_image(zero_reset_net(), input_shape=(2, 16, 16))
    ev = _events((2, 16, 16), n=400, seed=4)
    sim = AsyncSimulator()
    sim.load(image)
    r = sim.run(ev)
    _, ref_counts, ref_synops = RefSim(image).run(ev)
    assert sum(r.spike_counts.values()) > 0
    assert r.spike_counts == ref_counts and r.synops == ref_synops


def test_zero_reset_onnx_step_matches_the_chip_model(tmp_path):
    _, report = export_chip_image(zero_reset_net(), input_shape=(2, 16, 16))
    chip = report.extra["chip_model"]
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(6, 2, 2, 16, 16, generator=g) < 0.3).float() * 2
    ref = run_chip_model(chip, x).detach()
    path = export_onnx(chip, tmp_path / "z.onnx", input_shape=(2, 16, 16))
    assert ref.sum() > 0
    np.testing.assert_array_equal(run_onnx(path, x.numpy()), ref.numpy())


# --------------------------------------------------------------------------- warnings and reports
def test_weights_reaching_the_threshold_warn(caplog):
    quiet = nn.Sequential(_conv(2, 4, scale=0.5), iaf())
    _, report = export_chip_image(quiet, input_shape=(2, 8, 8))
    assert not any("threshold_high" in w for w in report.warnings)
    loud = nn.Sequential(_conv(2, 4, scale=0.5), iaf())
    with torch.no_grad():
        loud[0].weight[0, 0, 1, 1] = 2.5  # one event alone crosses 2x the threshold
    with caplog.at_level(logging.WARNING):
        _, report = export_chip_image(loud, input_shape=(2, 8, 8))
    msg = [w for w in report.warnings if "threshold_high" in w]
    assert len(msg) == 1 and "1 integer weights >= threshold_high" in msg[0] and "once per update" in msg[0]
    assert any("threshold_high" in r.getMessage() for r in caplog.records)


def test_threshold_rounding_error_in_export_report_and_inspect(tmp_path, capsys):
    model = nn.Sequential(_conv(2, 4), iaf())
    with torch.no_grad():
        model[0].weight.clamp_(-0.3, 0.3)
        model[0].weight[0, 0, 0, 0] = 0.3  # scale 127 / 0.3: threshold 1 -> 423.33 -> 423
    image, report = export_chip_image(model, input_shape=(2, 8, 8))
    layer = report.layers[0]
    assert layer.threshold_high == 423 and layer.threshold_exact == pytest.approx(423.333, abs=1e-2)
    assert layer.threshold_error == pytest.approx((423 - 423.3333) / 423.3333, rel=1e-3)
    assert "thr_err" in report.table() and "-0.08%" in report.table()
    rows = threshold_rounding(image)
    assert rows[0]["threshold_high"] == 423 and rows[0]["error"] == pytest.approx(layer.threshold_error, rel=1e-4)
    path = image.save(tmp_path / "m.chip")
    assert main(["inspect", str(path), "--png", str(tmp_path / "m.png")]) == 0
    assert "threshold rounding: core 0 423.333 -> 423 (-0.08%)" in capsys.readouterr().out
