"""TTM: the paper's Fig. 4 examples, every (T_in, T_out) in 1..16, the official code's
rounding, trim mode, and property tests."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from flexsnn.errors import ConfigError
from flexsnn.models.ttm import group_starts, temporal_transform, ttm_groups

RANGE = range(1, 17)


def _official_table(t_in: int, t_out: int) -> tuple[tuple[int, ...], ...]:
    """The grouping as the paper's code computes it (float rounding with eps = 1e-5),
    re-derived here as an independent oracle for the integer implementation."""
    fewer, more = min(t_in, t_out), max(t_in, t_out)
    ends = [round((i + 1) * more / fewer - 1e-5) for i in range(fewer)]
    starts = [0] + ends[:-1]
    groups = [tuple(range(a, b)) for a, b in zip(starts, ends)]
    if t_out <= t_in:
        return tuple(groups)
    return tuple((i,) for i, g in enumerate(groups) for _ in g)


def test_fig4_downsampling_5_to_3():
    assert ttm_groups(5, 3) == ((0, 1), (2,), (3, 4))
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    assert temporal_transform(x, 3).tolist() == [3.0, 4.0, 24.0]


def test_fig4_upsampling_3_to_5():
    assert ttm_groups(3, 5) == ((0,), (0,), (1,), (2,), (2,))
    x = torch.tensor([1.0, 2.0, 4.0])
    assert temporal_transform(x, 5).tolist() == [1.0, 1.0, 2.0, 4.0, 4.0]


def test_eq8_ties_round_down():
    # 2 groups over 5 frames: boundary 2.5 -> 2 (ties down), groups {0,1}, {2,3,4}
    assert group_starts(5, 2) == (0, 2, 5)
    assert ttm_groups(5, 2) == ((0, 1), (2, 3, 4))
    assert ttm_groups(2, 5) == ((0,), (0,), (1,), (1,), (1,))


@pytest.mark.parametrize("t_in", RANGE)
@pytest.mark.parametrize("t_out", RANGE)
def test_every_pair_matches_official_rounding_and_semantics(t_in, t_out):
    groups = ttm_groups(t_in, t_out)
    assert len(groups) == t_out
    if t_in != t_out:
        assert groups == _official_table(t_in, t_out)
    x = torch.arange(1, t_in + 1, dtype=torch.float64)[:, None] * torch.tensor([1.0, 10.0], dtype=torch.float64)
    y = temporal_transform(x, t_out)
    assert y.shape == (t_out, 2)
    if t_out == t_in:
        assert y is x
    elif t_out < t_in:
        # a partition of the input frames into consecutive groups, each summed
        assert [i for g in groups for i in g] == list(range(t_in))
        assert all(len(g) >= 1 for g in groups)
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
        assert torch.equal(y.sum(0), x.sum(0))
        for j, g in enumerate(groups):
            assert torch.equal(y[j], x[list(g)].sum(0))
    else:
        # every output slot is a copy of one input frame; every input frame is used, in order
        src = [g[0] for g in groups]
        assert sorted(set(src)) == list(range(t_in)) and src == sorted(src)
        counts = [src.count(i) for i in range(t_in)]
        assert max(counts) - min(counts) <= 1
        for j, i in enumerate(src):
            assert torch.equal(y[j], x[i])


@pytest.mark.parametrize("t_in", RANGE)
@pytest.mark.parametrize("t_out", RANGE)
def test_trim_mode(t_in, t_out):
    x = torch.randn(t_in, 3)
    y = temporal_transform(x, t_out, mode="trim")
    if t_out <= t_in:
        assert torch.equal(y, x[:t_out])
    else:
        assert torch.equal(y, temporal_transform(x, t_out, mode="even"))


def test_down_then_up_preserves_layout_and_grad():
    x = torch.randn(7, 2, 3, 4, 4, requires_grad=True)
    y = temporal_transform(temporal_transform(x, 3), 10)
    assert y.shape == (10, 2, 3, 4, 4)
    y.sum().backward()
    # each input frame is summed into one group whose output is copied k times
    groups_up = ttm_groups(3, 10)
    copies = [sum(1 for g in groups_up if g[0] == j) for j in range(3)]
    expected = torch.tensor([copies[j] for j, g in enumerate(ttm_groups(7, 3)) for _ in g], dtype=torch.float32)
    assert torch.equal(x.grad[:, 0, 0, 0, 0], expected)


def test_input_not_modified():
    x = torch.randn(6, 2)
    before = x.clone()
    temporal_transform(x, 4)
    temporal_transform(x, 9)
    temporal_transform(x, 2, mode="trim")
    assert torch.equal(x, before)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_t_out(bad):
    with pytest.raises(ConfigError):
        temporal_transform(torch.zeros(3, 1), bad)


def test_bad_mode():
    with pytest.raises(ConfigError, match="mode"):
        temporal_transform(torch.zeros(3, 1), 2, mode="avg")


@settings(max_examples=60, deadline=None)
@given(t_in=st.integers(1, 40), t_out=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_property_sum_preserved_down_copies_up(t_in, t_out, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (t_in, 2, 5), generator=gen).to(torch.float64)  # spike counts
    y = temporal_transform(x, t_out)
    assert y.shape == (t_out, 2, 5)
    if t_out <= t_in:
        assert torch.equal(y.sum(0), x.sum(0))  # spike totals kept
    else:
        # each output frame equals some input frame, and those frames appear in order
        src = [g[0] for g in ttm_groups(t_in, t_out)]
        assert torch.equal(y, x[src])
        # upsampling by copy multiplies totals by the group sizes
        assert torch.equal(y.sum(0), sum(x[i] for i in src))


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 40), k=st.integers(1, 40))
def test_property_group_starts_even(t, k):
    if k > t:
        t, k = k, t
    b = group_starts(t, k)
    sizes = [b[i + 1] - b[i] for i in range(k)]
    assert sum(sizes) == t and min(sizes) >= t // k and max(sizes) <= -(-t // k)
