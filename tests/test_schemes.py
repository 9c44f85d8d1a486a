"""Temporal-configuration sampling of the SDT / NMT / MTT schemes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.errors import ConfigError
from flexsnn.training.schemes import (
    SchemeConfig, is_non_increasing, sample_configs, step_generator,
)


def _many(scheme: SchemeConfig, n_stages: int, steps: int = 200) -> list[tuple[int, ...]]:
    out = []
    for step in range(steps):
        out += sample_configs(scheme, n_stages, step_generator(7, step))
    return out


def test_sdt_is_fixed_and_single():
    sch = SchemeConfig(name="sdt", T=10, s=5)
    assert sample_configs(sch, 4, step_generator(0, 0)) == [(10, 10, 10, 10)]
    assert sch.configs_per_step == 1 and sch.t_range == (10, 10)


def test_mtt_event_ranges_and_input_stage():
    sch = SchemeConfig(name="mtt", T=10, r_left=9, r_right=0)
    cfgs = _many(sch, 4)
    assert len(cfgs) == 200 * 3
    arr = np.array(cfgs)
    assert (arr[:, 0] == 10).all()                      # input stage keeps the data's T
    assert arr[:, 1:].min() == 1 and arr[:, 1:].max() == 10   # whole range reached
    assert sch.t_range == (1, 10) and sch.max_config(4) == (10, 10, 10, 10)
    # stages vary independently (not all uniform)
    assert any(len(set(c[1:])) > 1 for c in cfgs)


def test_mtt_event_range_is_clipped_and_can_exceed_T():
    sch = SchemeConfig(name="mtt", T=4, r_left=10, r_right=2)
    arr = np.array(_many(sch, 3))
    assert arr[:, 1:].min() == 1 and arr[:, 1:].max() == 6
    assert sch.stage_range == (1, 6) and sch.max_config(3) == (4, 6, 6)


def test_event_range_defaults_from_t_min_t_max():
    sch = SchemeConfig(name="mtt", T=10, t_min=3, t_max=12)
    assert sch.stage_range == (3, 12)


def test_mtt_static_ranges():
    sch = SchemeConfig(name="mtt", T=6, data_kind="static", t_min=2, t_max=6)
    arr = np.array(_many(sch, 5))
    assert arr.min() == 2 and arr.max() == 6
    assert len(set(arr[:, 0])) == 5                      # first stage varies too for static data


def test_nmt_uniform():
    sch = SchemeConfig(name="nmt", T=6, data_kind="static", t_min=1, t_max=6)
    cfgs = _many(sch, 4)
    assert all(len(set(c)) == 1 for c in cfgs)
    assert {c[0] for c in cfgs} == set(range(1, 7))
    ev = SchemeConfig(name="nmt", T=10, r_left=9, r_right=0)
    for c in _many(ev, 4, 50):
        assert c[0] == 10 and len(set(c[1:])) == 1


@pytest.mark.parametrize("kind", ["event", "static"])
@pytest.mark.parametrize("name", ["nmt", "mtt"])
@pytest.mark.parametrize("n_stages", [1, 2, 5])
def test_non_increasing(kind, name, n_stages):
    sch = SchemeConfig(name=name, T=8, data_kind=kind, t_min=1, t_max=8, non_increasing=True)
    cfgs = _many(sch, n_stages, 60)
    assert all(is_non_increasing(c) and c[0] == 8 and len(c) == n_stages for c in cfgs)
    if n_stages > 1:
        assert min(c[-1] for c in cfgs) == 1


def test_non_increasing_caps_range_above_T():
    sch = SchemeConfig(name="mtt", T=5, r_left=4, r_right=5, non_increasing=True)
    cfgs = _many(sch, 4, 100)
    assert max(max(c) for c in cfgs) == 5 and all(is_non_increasing(c) for c in cfgs)
    assert sch.t_range == (1, 5)


def test_sampling_is_a_function_of_seed_and_step():
    sch = SchemeConfig(name="mtt", T=10, r_left=9, r_right=0)
    a = sample_configs(sch, 4, step_generator(3, 17))
    b = sample_configs(sch, 4, step_generator(3, 17))
    c = sample_configs(sch, 4, step_generator(3, 18))
    assert a == b and a != c


def test_torch_generator_supported():
    sch = SchemeConfig(name="mtt", T=6, data_kind="static", t_min=1, t_max=6)
    a = sample_configs(sch, 3, torch.Generator().manual_seed(1))
    b = sample_configs(sch, 3, torch.Generator().manual_seed(1))
    assert a == b and all(1 <= t <= 6 for c in a for t in c)


@pytest.mark.parametrize("kwargs,field", [
    ({"name": "xyz"}, "scheme.name"),
    ({"T": 0}, "scheme.T"),
    ({"s": 0}, "scheme.s"),
    ({"data_kind": "video"}, "scheme.data_kind"),
    ({"t_min": 4, "t_max": 3}, "scheme.t_max"),
    ({"r_left": -1}, "scheme.r_left"),
    ({"name": "sdt", "data_kind": "static", "T": 9, "t_max": 6}, "scheme.T"),
])
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        SchemeConfig(**kwargs)
    assert info.value.field == field


def test_to_dict_round_trip():
    sch = SchemeConfig(name="mtt", T=10, r_left=9, r_right=0, non_increasing=True)
    assert SchemeConfig(**sch.to_dict()) == sch
