"""check_chip_image on in-memory images: exact types, shapes >= 1, thresholds, the DVS input's
shape, recurrent images allowed, and the loop-gain warning of cycles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from chip_builders import core, single_core_image
from flexsnn.converters.chip_check import chip_image_warnings, core_gain, cycles
from flexsnn.converters.chip_image import ChipImage, Destination, InputConfig, check_chip_image, with_core
from flexsnn.errors import ChipConstraintError


def _fields(image):
    with pytest.raises(ChipConstraintError) as err:
        check_chip_image(image)
    return {v.field for v in err.value.violations}


def test_valid_image_passes():
    check_chip_image(single_core_image(np.ones((2, 1, 3, 3)), (1, 5, 5)))


@pytest.mark.parametrize("field,value", [
    ("threshold_high", 10.0), ("threshold_high", "10"), ("threshold_high", True), ("kernel_size", 3.0),
    ("stride", (1,)), ("stride", (1.0, 1.0)), ("leak_enabled", "no"), ("reset_mode", "half"),
    ("input_shape", (1, 5)), ("core", "0"),
])
def test_wrong_core_field_types_refused(field, value):
    img = single_core_image(np.ones((2, 1, 3, 3)), (1, 5, 5))
    assert field in _fields(with_core(img, 0, **{field: value}))


@pytest.mark.parametrize("field,value", [("merge_polarities", "yes"), ("pooling", 2.0), ("shape", (1, 5))])
def test_wrong_input_field_types_refused(field, value):
    img = single_core_image(np.ones((2, 1, 3, 3)), (1, 5, 5))
    assert field in _fields(replace(img, input=replace(img.input, **{field: value})))


def test_numpy_integers_are_integers():
    img = single_core_image(np.ones((2, 1, 3, 3)), (1, 5, 5))
    check_chip_image(with_core(img, 0, threshold_high=np.int64(10), stride=(np.int32(1), 1)))


def test_thresholds_must_be_positive_and_floor_non_positive():
    img = single_core_image(np.ones((2, 1, 3, 3)), (1, 5, 5))
    assert "thresholds" in _fields(with_core(img, 0, threshold_high=0, threshold_low=-5))
    assert "thresholds" in _fields(with_core(img, 0, threshold_high=-3, threshold_low=-5))
    assert "thresholds" in _fields(with_core(img, 0, threshold_high=10, threshold_low=2))
    check_chip_image(with_core(img, 0, threshold_high=1, threshold_low=0))


def test_kernel_larger_than_its_input_refused():
    """A 5x5 kernel on a 3x3 input gives an output of -1 (or 0): refused, not 'no decision'."""
    img = single_core_image(np.ones((2, 1, 5, 5)), (1, 3, 3))  # builder computes output (2, -1, -1)
    assert "shapes" in _fields(img)
    assert "shapes" in _fields(with_core(img, 0, output_shape=(2, 0, 0)))


def test_core_input_must_match_dvs_input_and_pooling():
    """N-MNIST image whose core 0 expects 34x34 while the input says pooled 17x17."""
    c0 = core(0, (2, 34, 34), np.ones((2, 2, 3, 3)), stride=(2, 2))
    img = ChipImage(input=InputConfig((2, 17, 17), (0,), pooling=2), cores=(c0,), output_core=0)
    assert "input_shape" in _fields(img)
    check_chip_image(replace(img, input=InputConfig((2, 34, 34), (0,), pooling=1)))


def _loop_image(weight: int, threshold: int = 10) -> ChipImage:
    """Core 0 (input) -> core 2 -> core 3 -> core 2 (a two-core cycle), 1x1 kernels."""
    c0 = core(0, (1, 4, 4), [[[[threshold]]]], thr_high=threshold, dests=[(2, 1)])
    c2 = core(2, (1, 4, 4), [[[[weight]]]], thr_high=threshold, dests=[(3, 1)], layer=1)
    c3 = core(3, (1, 4, 4), [[[[weight]]]], thr_high=threshold, dests=[(2, 1)], layer=2)
    return ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0, c2, c3), output_core=3)


def test_recurrent_images_are_allowed_and_loop_gain_is_warned():
    strong, weak = _loop_image(10), _loop_image(3)
    check_chip_image(strong)
    check_chip_image(weak)
    assert cycles(strong) == [(2, 3)]
    assert core_gain(strong.core(2)) == 1.0 and core_gain(weak.core(2)) == pytest.approx(0.3)
    warnings = chip_image_warnings(strong)
    assert len(warnings) == 1 and "cycle of cores 2 -> 3 -> 2" in warnings[0] and "loop gain up to 1" in warnings[0]
    assert chip_image_warnings(weak) == []


def test_self_loop_is_a_cycle():
    c0 = core(0, (1, 4, 4), [[[[20]]]], thr_high=10, dests=[(0, 1)])
    img = ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0,), output_core=0)
    check_chip_image(img)
    assert cycles(img) == [(0,)]
    assert "cycle of cores 0 -> 0" in chip_image_warnings(img)[0]


def test_chain_has_no_cycles_and_no_warnings():
    c0 = core(0, (1, 4, 4), [[[[20]]]], thr_high=10, dests=[(1, 1)])
    c1 = core(1, (1, 4, 4), [[[[20]]]], thr_high=10, layer=1)
    img = ChipImage(input=InputConfig((1, 4, 4), (0,)), cores=(c0, c1), output_core=1)
    assert cycles(img) == [] and chip_image_warnings(img) == []
    assert isinstance(img.core(0).destinations[0], Destination)


def test_dataset_sensor_must_match_the_image_input():
    """``input.pooling = 2`` on a (2, 34, 34) input means a 68x68 sensor: 34x34 N-MNIST is refused
    before any sample runs (it would land in one quarter of every map and classify nothing)."""
    from chip_builders import nmnist_image, random_events
    from flexsnn.data.events import SensorSize
    from flexsnn.deploy.evaluate import evaluate_dataset
    from flexsnn.deploy.factory import make_backend
    from flexsnn.errors import ConfigError

    class Samples(list):
        name = "nmnist"
        sensor = SensorSize(width=34, height=34, polarities=2)

    data = Samples([(random_events(i, 34, 34, 2, 50), 0) for i in range(2)])
    base = nmnist_image(0)
    assert evaluate_dataset(make_backend("async", image=base), data).samples == 2
    pooled = replace(base, input=replace(base.input, pooling=2))
    check_chip_image(pooled)  # self-consistent: a 68x68 sensor pooled to 34x34
    with pytest.raises(ConfigError, match=r"nmnist sensor='34x34' is invalid: expected the chip image's input "
                                          r"68x68 \(input.shape 34x34 x input.pooling 2\)"):
        evaluate_dataset(make_backend("async", image=pooled), data)
