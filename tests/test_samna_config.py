"""ChipImage -> samna Speck2e configuration plan (recorded expectations) and its application
onto a configuration object (the samna test double's slotted classes)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from doubles.samna_device_double import SpeckConfigurationDouble
from flexsnn.converters.chip_image import (
    ChipImage,
    CoreConfig,
    Destination,
    InputConfig,
    ReadoutConfig,
    with_core,
)
from flexsnn.converters.samna_config import (
    READOUT_LAYER,
    apply_plan,
    build_samna_config,
    plan_samna_config,
    validate_samna_config,
    zero_neuron_states,
)
from flexsnn.errors import BackendUnavailable, ChipConstraintError, ConfigError
from flexsnn.hwtests.images import random_image, readout_image


def tiny_image_v2() -> ChipImage:
    """Input (2, 4, 6) -> core 5 (2x2 stride 2, leak, return-to-zero) -> core 7 (3x3 kernel, stride 2, padding y 1: 2x3 map -> 1x1, 5 channels: readout)."""
    w5 = (np.arange(16, dtype=np.int8).reshape(2, 2, 2, 2) - 8)
    c5 = CoreConfig(core=5, layer=0, name="conv", input_shape=(2, 4, 6), output_shape=(2, 2, 3), kernel_size=2,
                    stride=(2, 2), padding=(0, 0), weights=w5, biases=np.array([1, -2], np.int16),
                    threshold_high=12, threshold_low=-12, reset_mode="zero", leak_enabled=True,
                    destinations=(Destination(7, 1),))
    w7 = np.zeros((5, 2, 3, 3), np.int8)
    w7[0, 0, 0, 2], w7[4, 1, 1, 0] = 3, -4
    c7 = CoreConfig(core=7, layer=1, name="fc", input_shape=(2, 2, 3), output_shape=(5, 1, 1), kernel_size=3,
                    stride=(2, 2), padding=(1, 0), weights=w7, biases=np.zeros(5, np.int16),
                    threshold_high=9, threshold_low=-1)
    return ChipImage(input=InputConfig(shape=(2, 4, 6), destinations=(5,)), cores=(c5, c7), output_core=7,
                     readout=ReadoutConfig(num_classes=2), source="tiny")


#: Recorded expectation of plan_samna_config(tiny_image_v2()).to_dict(), written by hand from
#: sinabs' DynapcnnConfigBuilder.get_dynapcnn_layer_config_dict: x = width, kernel transposed
#: to [c_out][c_in][kw][kh], neurons [c][w][h]; readout as in the datasheet.
EXPECTED = {
    "chip": "speck2e",
    "dvs_layer": {"pass_sensor_events": False, "monitor_enable": False},
    "cnn_layers": {
        "5": {
            "dimensions": {"input_shape": {"size": {"x": 6, "y": 4}, "feature_count": 2},
                           "output_shape": {"size": {"x": 3, "y": 2}, "feature_count": 2},
                           "padding": {"x": 0, "y": 0}, "stride": {"x": 2, "y": 2}, "kernel_size": 2},
            "weights": [[[[-8, -6], [-7, -5]], [[-4, -2], [-3, -1]]], [[[0, 2], [1, 3]], [[4, 6], [5, 7]]]],
            "biases": [1, -2], "leak_enable": True, "threshold_high": 12, "threshold_low": -12,
            "return_to_zero": True, "monitor_enable": False, "neurons_initial_value_shape": [2, 3, 2],
            "destinations": [{"layer": 7, "enable": True, "pooling": 1}],
        },
        "7": {
            "dimensions": {"input_shape": {"size": {"x": 3, "y": 2}, "feature_count": 2},
                           "output_shape": {"size": {"x": 1, "y": 1}, "feature_count": 5},
                           "padding": {"x": 0, "y": 1}, "stride": {"x": 2, "y": 2}, "kernel_size": 3},
            "weights": "checked separately",
            "biases": [0, 0, 0, 0, 0], "leak_enable": False, "threshold_high": 9, "threshold_low": -1,
            "return_to_zero": False, "monitor_enable": True, "neurons_initial_value_shape": [5, 1, 1],
            "destinations": [{"layer": 12, "enable": True, "pooling": 1}],
        },
    },
    "readout": {"enable": True, "readout_configuration_sel": 3, "output_mode_sel": 3,
                "low_pass_filter_disable": True, "threshold": 1, "monitor_enable": False,
                "readout_pin_monitor_enable": True},
    "monitored_cores": [7],
    "input_cores": [5],
    "slow_clock_required": True,
    "warnings": [],
}


def test_plan_matches_recorded_expectation():
    plan = plan_samna_config(tiny_image_v2())
    got = plan.to_dict()
    json.dumps(got)  # JSON-able
    w7 = got["cnn_layers"]["7"].pop("weights")
    exp = json.loads(json.dumps(EXPECTED))
    exp["cnn_layers"]["7"].pop("weights")
    assert got == exp
    w7 = np.array(w7)
    assert w7.shape == (5, 2, 3, 3)
    # kernel element (ky=0, kx=2) of [0, 0] and (ky=1, kx=0) of [4, 1], in samna's x-first layout
    assert w7[0, 0, 2, 0] == 3 and w7[4, 1, 0, 1] == -4 and np.count_nonzero(w7) == 2


def test_plan_core_order_monitor_options_and_no_readout():
    image = random_image((6, 2, 8), seed=3)
    plan = plan_samna_config(image, monitor="all")
    assert [lp.core for lp in plan.cnn_layers] == [6, 2, 8]
    assert plan.monitored_cores == (6, 2, 8) and all(lp.monitor_enable for lp in plan.cnn_layers)
    assert plan.readout is None and not plan.slow_clock_required
    assert plan.layer(8).destinations == ()
    assert plan.layer(6).destinations[0].pooling == 2
    plan2 = plan_samna_config(image, monitor=[2])
    assert [lp.monitor_enable for lp in plan2.cnn_layers] == [False, True, False]
    with pytest.raises(ConfigError, match="monitor"):
        plan_samna_config(image, monitor=[0])
    with pytest.raises(KeyError, match="not configured"):
        plan.layer(0)


def test_plan_readout_skipped_when_disabled_and_threshold_set():
    image = readout_image(4, num_classes=3)
    assert plan_samna_config(image, use_readout=False).readout is None
    plan = plan_samna_config(image, readout_threshold=5)
    assert plan.readout.threshold == 5
    assert plan.layer(4).destinations[-1].layer == READOUT_LAYER
    with pytest.raises(ConfigError, match="readout_threshold"):
        plan_samna_config(image, readout_threshold=-1)


def test_plan_refuses_readouts_the_chip_cannot_run():
    image = readout_image(4, num_classes=3)
    with pytest.raises(ChipConstraintError, match="channel_erratum"):
        plan_samna_config(replace(image, readout=ReadoutConfig(num_classes=3, channel_erratum=False)))
    big = random_image((2, 3, 4), seed=0)  # output (3, 1, 1) but 1 channel/class: no erratum room
    with pytest.raises(ChipConstraintError, match="channel_erratum"):
        plan_samna_config(replace(big, readout=ReadoutConfig(num_classes=3, channel_erratum=False)))
    ten = readout_image(4, num_classes=10)  # classes on channels 0..36: fine with the erratum
    assert plan_samna_config(ten).readout is not None
    base = readout_image(4, num_classes=3)
    core = base.core(4)
    w = np.zeros((65, 2, 4, 4), np.int8)
    w[:9] = core.weights
    wide = with_core(base, 4, weights=w, biases=np.zeros(65, np.int16), output_shape=(65, 1, 1))
    with pytest.raises(ChipConstraintError, match="output channels = 65 exceeds limit <= 64"):
        plan_samna_config(wide)


def test_plan_warns_about_threshold_low_zero_and_rejects_other_chips():
    image = with_core(readout_image(4), 4, threshold_low=0)
    plan = plan_samna_config(image)
    assert plan.warnings and "threshold_low = 0" in plan.warnings[0]
    with pytest.raises(ConfigError, match="chip"):
        plan_samna_config(replace(image, chip="speck2f"))


def test_apply_plan_writes_samna_fields():
    plan = plan_samna_config(tiny_image_v2())
    config = apply_plan(plan, SpeckConfigurationDouble())
    assert config.dvs_layer.pass_sensor_events is False
    l5, l7 = config.cnn_layers[5], config.cnn_layers[7]
    assert l5.dimensions == EXPECTED["cnn_layers"]["5"]["dimensions"]
    assert l5.weights == EXPECTED["cnn_layers"]["5"]["weights"]
    assert l5.biases == [1, -2] and l5.leak_enable is True and l5.return_to_zero is True
    assert np.array(l5.neurons_initial_value).shape == (2, 3, 2) and not np.any(l5.neurons_initial_value)
    assert (l5.destinations[0].layer, l5.destinations[0].enable, l5.destinations[0].pooling) == (7, True, 1)
    assert l5.destinations[1].enable is False
    assert (l7.destinations[0].layer, l7.monitor_enable, l7.threshold_low) == (12, True, -1)
    assert config.readout.enable is True and config.readout.readout_configuration_sel == 3
    assert config.readout.readout_pin_monitor_enable is True
    assert config.cnn_layers[0].dimensions is None  # unused cores untouched
    # reset path: zeroing states after someone changed them
    config.cnn_layers[5].neurons_initial_value = [[[7, 7]] * 3] * 2
    zero_neuron_states(plan, config)
    assert not np.any(config.cnn_layers[5].neurons_initial_value)


def test_apply_plan_names_the_field_samna_rejects():
    class Picky(SpeckConfigurationDouble):
        pass

    config = Picky()

    class RejectingLayer:
        def __init__(self, inner):
            object.__setattr__(self, "inner", inner)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __setattr__(self, name, value):
            if name == "threshold_low":
                raise TypeError("incompatible function arguments")
            setattr(self.inner, name, value)

    config.cnn_layers[5] = RejectingLayer(config.cnn_layers[5])
    with pytest.raises(TypeError, match=r"cnn_layers\[5\]\.threshold_low"):
        apply_plan(plan_samna_config(tiny_image_v2()), config)


def test_without_samna_one_error_names_the_hardware_extra():
    from flexsnn._optional import samna_status

    if samna_status()[0]:
        pytest.skip("the real samna is installed here")
    with pytest.raises(BackendUnavailable, match=r"flexsnn\[hardware\]"):
        build_samna_config(readout_image(4))
    with pytest.raises(BackendUnavailable, match="hardware"):
        validate_samna_config(object())


def test_plan_of_an_exported_readout_model():
    import torch

    from flexsnn.converters.export import export_chip_image
    from flexsnn.models.zoo import build_model

    torch.manual_seed(0)
    image, _ = export_chip_image(build_model("speck3c1fc", batch_norm=False), readout=True)
    plan = plan_samna_config(image)
    out = plan.layer(image.output_core)
    assert out.destinations[-1].layer == READOUT_LAYER and out.monitor_enable
    assert plan.readout is not None and plan.slow_clock_required
    assert [lp.core for lp in plan.cnn_layers] == image.core_order()
