"""Layer -> core mapping: deterministic bipartite matching, checked user order, named failures."""

from __future__ import annotations

import pytest

from flexsnn.converters.mapping import fitting_cores, map_layers_to_cores
from flexsnn.converters.speck2e import KI, SPECK2E
from flexsnn.errors import ChipConstraintError


def need(kernel, neuron, bias=8):
    return {"kernel": kernel, "neuron": neuron, "bias": bias}


def test_greedy_when_possible_and_deterministic():
    needs = [need(512, 64 * KI), need(8 * KI, 32 * KI), need(32 * KI, 4 * KI), need(64 * KI, KI), need(16 * KI, 10)]
    cores = map_layers_to_cores(needs)
    assert cores == [0, 1, 3, 5, 2]  # the speck4c assignment sinabs finds too
    assert all(map_layers_to_cores(needs) == cores for _ in range(3))


def test_matching_backtracks_where_greedy_fails():
    # A fits cores 0-4, B only 0-2 (40Ki neurons): "lowest free core" gives A->0,1,2 and starves B
    a, b = need(16 * KI, 20 * KI), need(1, 40 * KI)
    cores = map_layers_to_cores([a, a, a, b])
    assert cores == [0, 1, 3, 2]  # the lexicographically smallest complete matching


def test_user_order_checked_with_memory_and_excess():
    needs = [need(512, 64 * KI), need(8 * KI, 32 * KI)]
    assert map_layers_to_cores(needs, core_order=[2, 0]) == [2, 0]
    with pytest.raises(ChipConstraintError) as err:
        map_layers_to_cores(needs, core_order=[5, 5], names=["conv1", "conv2"])
    text = str(err.value)
    assert "duplicates" in text
    assert "conv1" in text and "neuron memory on core 5" in text and f"over by {64 * KI - 16 * KI}" in text


def test_layer_fitting_no_core_is_named_with_memory_and_excess():
    needs = [need(512, 64 * KI), need(128 * KI, 100)]
    with pytest.raises(ChipConstraintError) as err:
        map_layers_to_cores(needs, names=["conv1", "conv2 (big)"])
    v = err.value.violations[0]
    assert v.where == "conv2 (big)" and "kernel memory over the largest core by 65536 entries" in v.fix


def test_too_many_layers_competing_for_big_cores():
    needs = [need(64 * KI, 100)] * 3  # only cores 5 and 6 have 64Ki kernel memory
    with pytest.raises(ChipConstraintError) as err:
        map_layers_to_cores(needs)
    assert "only cores [5, 6] fit them" in str(err.value)


def test_fitting_cores_table():
    assert fitting_cores(need(64 * KI, 16 * KI)) == [5, 6]
    assert fitting_cores(need(16 * KI, 64 * KI)) == [0, 1, 2]
    assert len(fitting_cores(need(1, 1))) == SPECK2E.n_cores
