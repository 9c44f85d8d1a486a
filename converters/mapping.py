"""Layer -> core assignment by bipartite matching under the per-core memory limits.

Layers and cores form a bipartite graph with an edge where a layer's kernel, neuron and bias
memory all fit the core (``networkx``). Among all complete matchings :func:`map_layers_to_cores`
returns the lexicographically smallest one (layer 0 on the lowest possible core, then layer 1,
...): deterministic, and equal to sinabs' Edmonds-Karp result whenever "each layer takes the
lowest free core it fits" succeeds. A user-given order is checked instead. When no complete
matching exists, the error says which layer fits no core (which memory, by how much) or, by
Hall's condition, which group of layers competes for too few cores.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from flexsnn.converters.speck2e import SPECK2E, ChipLimits
from flexsnn.errors import ChipConstraintError, Violation

MEMORIES = ("kernel", "neuron", "bias")


def _capacity(limits: ChipLimits, kind: str, core: int) -> int:
    return {"kernel": limits.kernel_memory, "neuron": limits.neuron_memory,
            "bias": limits.bias_memory}[kind][core]


def fitting_cores(need: Mapping[str, int], limits: ChipLimits = SPECK2E) -> list[int]:
    """Core ids whose kernel, neuron and bias memory all hold ``need`` (entries)."""
    return [c for c in range(limits.n_cores) if all(need[k] <= _capacity(limits, k, c) for k in MEMORIES)]


def _max_matching_size(edges: dict[int, list[int]], fixed: dict[int, int]) -> int:
    import networkx as nx
    from networkx.algorithms import bipartite

    g = nx.Graph()
    layers = [("L", i) for i in sorted(edges) if i not in fixed]
    used = set(fixed.values())
    g.add_nodes_from(layers, bipartite=0)
    for i in sorted(edges):
        if i in fixed:
            continue
        for c in edges[i]:
            if c not in used:
                g.add_edge(("L", i), ("C", c))
    if not layers:
        return 0
    m = bipartite.hopcroft_karp_matching(g, top_nodes=layers)
    return sum(1 for node in layers if node in m)


def _describe_misfit(i: int, need: Mapping[str, int], names: Sequence[str], limits: ChipLimits) -> Violation:
    parts = []
    for c in range(limits.n_cores):
        over = [f"{k} {need[k]} > {_capacity(limits, k, c)} (+{need[k] - _capacity(limits, k, c)})"
                for k in MEMORIES if need[k] > _capacity(limits, k, c)]
        parts.append(f"core {c}: " + ", ".join(over))
    worst = {k: need[k] - max(_capacity(limits, k, c) for c in range(limits.n_cores)) for k in MEMORIES}
    blocking = [f"{k} memory over the largest core by {v} entries" for k, v in worst.items() if v > 0]
    fix = ("; ".join(blocking) + ": shrink the layer") if blocking else \
        "no core has enough kernel AND neuron memory at once: reduce channels or the output map"
    return Violation(names[i], "memory", dict(need), "fits no core (" + "; ".join(parts) + ")", fix)


def map_layers_to_cores(
    needs: Sequence[Mapping[str, int]],
    *,
    names: Optional[Sequence[str]] = None,
    core_order: Optional[Sequence[int]] = None,
    limits: ChipLimits = SPECK2E,
) -> list[int]:
    """Assign each layer (memory ``needs[i]``: kernel/neuron/bias entries) its own core.

    Args:
        needs: per layer, ``{"kernel": .., "neuron": .., "bias": ..}`` in entries.
        names: per layer, text for messages (default ``"layer i"``).
        core_order: user-given core per layer; checked, not searched.
        limits: the chip.

    Returns:
        core id per layer.

    Raises:
        ChipConstraintError: naming every layer that fits no core, or the given order's problems,
            or the layers that compete for too few cores.
    """
    names = list(names) if names is not None else [f"layer {i}" for i in range(len(needs))]
    if len(needs) > limits.n_cores:
        raise ChipConstraintError([Violation("model", "number of layers", len(needs),
                                             f"<= {limits.n_cores} cores", "use fewer layers")], limits.name)
    if core_order is not None:
        return _check_order(needs, names, list(core_order), limits)
    edges = {i: fitting_cores(need, limits) for i, need in enumerate(needs)}
    misfits = [_describe_misfit(i, needs[i], names, limits) for i, cs in edges.items() if not cs]
    if misfits:
        raise ChipConstraintError(misfits, limits.name)
    fixed: dict[int, int] = {}
    for i in range(len(needs)):
        for c in edges[i]:
            if c in fixed.values():
                continue
            trial = {**fixed, i: c}
            if _max_matching_size(edges, trial) == len(needs) - len(trial):
                fixed = trial
                break
        else:
            raise ChipConstraintError([_hall_violation(edges, names, limits)], limits.name)
    return [fixed[i] for i in range(len(needs))]


def _hall_violation(edges: dict[int, list[int]], names: Sequence[str], limits: ChipLimits) -> Violation:
    from itertools import combinations

    idx = sorted(edges)
    for size in range(2, len(idx) + 1):
        for group in combinations(idx, size):
            cores = sorted(set().union(*(edges[i] for i in group)))
            if len(cores) < size:
                return Violation(", ".join(names[i] for i in group), "cores", f"{size} layers",
                                 f"only cores {cores} fit them ({len(cores)} cores)",
                                 "shrink one of these layers so that it fits another core")
    return Violation("model", "cores", len(idx), "a complete layer-to-core matching", "shrink layers")


def _check_order(needs, names, order: list[int], limits: ChipLimits) -> list[int]:
    bad = []
    if len(order) != len(needs):
        bad.append(Violation("core_order", "length", len(order), f"{len(needs)} (one core per layer)",
                             "give one core id per layer, e.g. --core-order " +
                             ",".join(str(i) for i in range(len(needs)))))
        raise ChipConstraintError(bad, limits.name)
    if len(set(order)) != len(order):
        bad.append(Violation("core_order", "duplicates", order, "each core used once", "use distinct cores"))
    for i, c in enumerate(order):
        if not 0 <= c < limits.n_cores:
            bad.append(Violation(names[i], "core", c, f"0..{limits.n_cores - 1}", "use an existing core"))
            continue
        for k in MEMORIES:
            cap = _capacity(limits, k, c)
            if needs[i][k] > cap:
                bad.append(Violation(names[i], f"{k} memory on core {c}", needs[i][k],
                                     f"<= {cap} entries (over by {needs[i][k] - cap})",
                                     f"put it on one of cores {fitting_cores(needs[i], limits)}"))
    if bad:
        raise ChipConstraintError(bad, limits.name)
    return order
