"""Discretization with sinabs' rules: hand-computed scales, ranges, clipped/zeroed counts, warnings."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsnn.converters.discretize import discretization_scale, discretize_layer
from flexsnn.errors import ChipConstraintError


def test_hand_computed_scale_and_values():
    w = torch.tensor([0.5, -1.0, 0.25, 0.001]).reshape(2, 2, 1, 1)
    # weights: |min| 1 > 0.5 * 128/127 -> 128 / 1; thresholds (-1, 1): 32767 / 1; biases zero: inf
    d = discretize_layer(w, None, 1.0, -1.0)
    assert d.scale == 128.0
    assert d.weights.reshape(-1).tolist() == [64, -128, 32, 0]
    assert (d.threshold_high, d.threshold_low) == (128, -128)
    assert d.weights.dtype == np.int8 and d.biases.dtype == np.int16
    assert d.n_zeroed == 1 and d.n_clipped == 0 and d.n_nonzero == 4


def test_threshold_bound_scale():
    w = torch.full((1, 1, 1, 1), 1e-4)
    d = discretize_layer(w, None, 2.0, -2.0)
    assert d.scale == pytest.approx(32767 / 2) and d.threshold_high == 32767 and d.threshold_low == -32767
    assert d.weights.item() == 2  # round(1e-4 * 16383.5)


def test_scale_rule_prefers_larger_negative_range():
    assert discretization_scale(torch.tensor([-128.0, 127.0]), 8) == pytest.approx(1.0)
    assert discretization_scale(torch.tensor([-1.0, 0.5]), 8) == 128.0
    assert discretization_scale(torch.tensor([-0.5, 1.0]), 8) == 127.0


def test_min_v_mem_none_refused():
    with pytest.raises(ChipConstraintError) as err:
        discretize_layer(torch.ones(1, 1, 1, 1), None, 1.0, None, name="layer 3 (Conv2d)")
    v = err.value.violations[0]
    assert v.field == "min_v_mem" and v.where == "layer 3 (Conv2d)" and "zeroes" in v.fix


def test_warns_when_most_weights_vanish(caplog):
    w = torch.cat([torch.tensor([1.0]), torch.full((9,), 1e-3)]).reshape(10, 1, 1, 1)
    with caplog.at_level(logging.WARNING, logger="flexsnn.converters.discretize"):
        d = discretize_layer(w, None, 1.0, -1.0, name="fc")
    assert d.n_zeroed == 9 and "fc" in caplog.text and "9 of 10" in caplog.text


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=30),
       st.floats(0.01, 100), st.floats(0.0, 1.0))
def test_discrete_values_are_integers_in_range(values, thr, low_frac):
    w = torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)
    try:
        d = discretize_layer(w, torch.zeros(w.shape[0]), thr, -thr * low_frac - 1e-3)
    except ChipConstraintError as err:  # only when the threshold rounds away next to big weights
        assert err.violations[0].field == "discrete threshold"
        assert thr * 128 / max(abs(v) for v in values) < 0.5 + 1e-3
        return
    assert d.weights.min() >= -128 and d.weights.max() <= 127
    assert -32768 <= d.threshold_low < d.threshold_high <= 32767
    exact = np.asarray(values, dtype=np.float32).astype(np.float64) * d.scale
    assert np.all(np.abs(d.weights.reshape(-1).astype(np.float64) - exact) <= 0.5 + 1e-4 * d.scale)
