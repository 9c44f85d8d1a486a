"""validate(): one network per Speck2e limit; each error names the limit, the layer and the value."""

from __future__ import annotations

import pytest
import sinabs.layers as sl
from torch import nn

from flexsnn.converters.speck2e import SPECK2E
from flexsnn.converters.validate import model_violations, parse_chip_layers, validate
from flexsnn.errors import ChipConstraintError


def iaf(min_v_mem=-1.0):
    return sl.IAFSqueeze(batch_size=1, min_v_mem=min_v_mem)


def conv(c_in, c_out, k=3, **kw):
    return nn.Conv2d(c_in, c_out, k, bias=False, **kw)


def ok_net():
    return nn.Sequential(conv(2, 8, padding=1), iaf(), sl.SumPool2d(2), conv(8, 10, 16), iaf())


# (id, model, input_shape, expected field, expected text in `where`, expected value)
CASES = [
    ("cores", lambda: nn.Sequential(*[m for _ in range(10) for m in (conv(2, 2, 1), iaf())]),
     (2, 8, 8), "number of cores", "layer 18 (Conv2d)", 10),
    ("input channels", lambda: nn.Sequential(conv(3, 4), iaf()), (3, 16, 16), "input channels", "input", 3),
    ("input size", lambda: nn.Sequential(conv(2, 1, 1, stride=2), iaf()), (2, 130, 130),
     "input size", "layer 0 (Conv2d)", "130×130"),
    ("output size", lambda: nn.Sequential(conv(2, 1, 1), iaf()), (2, 65, 65),
     "output size", "layer 0 (Conv2d)", "65×65"),
    ("features", lambda: nn.Sequential(conv(2, 1025, 1), iaf()), (2, 1, 1), "output features",
     "layer 0 (Conv2d)", 1025),
    ("kernel", lambda: nn.Sequential(conv(2, 4, 17), iaf()), (2, 34, 34), "kernel_size",
     "layer 0 (Conv2d)", "17×17"),
    ("stride", lambda: nn.Sequential(conv(2, 4, 3, stride=3), iaf()), (2, 34, 34), "stride_y",
     "layer 0 (Conv2d)", 3),
    ("padding", lambda: nn.Sequential(conv(2, 4, 3, padding=8), iaf()), (2, 16, 16), "padding_y",
     "layer 0 (Conv2d)", 8),
    ("pooling size", lambda: nn.Sequential(conv(2, 4), iaf(), sl.SumPool2d(3), conv(4, 4), iaf()),
     (2, 34, 34), "pooling", "layer 2 (SumPool2d", "3×3"),
    ("pooling stride", lambda: nn.Sequential(conv(2, 4), iaf(), sl.SumPool2d(2, stride=1), conv(4, 4), iaf()),
     (2, 16, 16), "pooling stride", "layer 2 (SumPool2d", (1, 1)),
    ("layer order", lambda: nn.Sequential(iaf(), conv(2, 4), iaf()), (2, 16, 16), "layer order",
     "layer 0 (IAFSqueeze)", "IAFSqueeze"),
    ("missing neuron", lambda: nn.Sequential(conv(2, 4), conv(4, 4), iaf()), (2, 16, 16), "layer order",
     "layer 0 (Conv2d)", "followed by Conv2d"),
    ("linear", lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 2), iaf()), (2, 2, 2), "layer type",
     "layer 1 (Linear)", "Linear"),
    ("min_v_mem None", lambda: nn.Sequential(conv(2, 4), iaf(min_v_mem=None)), (2, 16, 16), "min_v_mem",
     "layer 1 (IAFSqueeze)", None),
    ("kernel memory", lambda: nn.Sequential(conv(64, 512, 3), iaf()), (64, 8, 8), "kernel memory",
     "layer 0 (Conv2d)", 64 * 2 ** (4 + 9)),
    ("neuron memory", lambda: nn.Sequential(conv(2, 32, 1), iaf()), (2, 64, 64), "neuron memory",
     "layer 0 (Conv2d)", 32 * 64 * 64),
    ("kernel and neuron memory on no single core", lambda: nn.Sequential(conv(32, 64, 3, padding=1), iaf()),
     (32, 32, 32), "kernel+neuron memory", "layer 0 (Conv2d)", (32 * 2 ** (4 + 6), 64 * 2 ** (5 + 5))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_limit_named_with_layer_and_value(case):
    _, make, shape, fld, where, value = case
    with pytest.raises(ChipConstraintError) as err:
        validate(make(), shape)
    hits = [v for v in err.value.violations if v.field == fld]
    assert hits, f"no {fld!r} violation in: {err.value}"
    v = hits[0]
    assert where in v.where
    assert v.value == value
    assert v.limit and v.fix
    assert fld in str(err.value) and where in str(err.value)


def test_kernel_fix_is_concrete():
    with pytest.raises(ChipConstraintError) as err:
        validate(nn.Sequential(conv(2, 4, 17), iaf()), (2, 34, 34))
    assert "kernel_size = 17×17 exceeds limit <= 16×16; fix: use two 9×9 convolutions or a stride" in str(err.value)


def test_every_violation_collected_at_once():
    net = nn.Sequential(conv(3, 4, 17, stride=3, padding=8), iaf(min_v_mem=None), sl.SumPool2d(3))
    violations = model_violations(net, (3, 40, 40))
    fields = {v.field for v in violations}
    assert {"input channels", "kernel_size", "stride_y", "stride_x", "padding_y", "padding_x",
            "pooling", "min_v_mem"} <= fields
    with pytest.raises(ChipConstraintError) as err:
        validate(net, (3, 40, 40))
    assert len(err.value.violations) == len(violations) >= 8


def test_valid_net_passes_and_reports_memory_formulas():
    layers = validate(ok_net(), (2, 32, 32))
    assert [cl.index for cl in layers] == [0, 3]
    assert layers[0].memory() == {"kernel": 2 * 2 ** (4 + 3), "neuron": 8 * 2 ** (5 + 5), "bias": 8}
    assert layers[1].input_shape == (8, 16, 16) and layers[1].output_shape == (10, 1, 1)
    assert layers[1].memory() == {"kernel": 8 * 2 ** (8 + 4), "neuron": 10, "bias": 10}


@pytest.mark.parametrize("k", range(1, 19))
def test_kernel_rule_accepts_exactly_the_table(k):
    net = nn.Sequential(conv(1, 1, k), iaf())
    bad = [v for v in model_violations(net, (1, 20, 20)) if v.field == "kernel_size"]
    assert (not bad) == (k <= SPECK2E.max_kernel_size)


def test_parse_groups_conv_iaf_pool():
    layers, bad = parse_chip_layers(ok_net(), (2, 32, 32))
    assert not bad and layers[0].pooling == (2, 2) and layers[0].neuron_index == 1
