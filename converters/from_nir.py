"""NIR graph -> ``nn.Sequential`` of torch/sinabs layers that :func:`chip_ready_model` converts.

Any tool that writes NIR (sinabs, snnTorch, norse, Rockpool, or ``nir`` by hand) can reach the
chip this way; the result then takes the same validation, mapping, discretization, ChipImage,
inspect and simulate path as a flexsnn checkpoint (:func:`flexsnn.converters.export.export_chip_image`).

Accepted nodes (one chain from ``Input`` to ``Output``):

- ``Input`` (its shape ``(C, H, W)``, or a leading batch of 1, is the input shape), ``Output``;
- ``Conv2d`` (weights ``[c_out, c_in, kh, kw]``, integer padding) -> ``nn.Conv2d``;
- ``Affine`` / ``Linear`` (``[out, in]``) -> ``nn.Linear``; ``Flatten`` of the whole sample;
- ``SumPool2d`` -> ``sinabs.layers.SumPool2d``; ``AvgPool2d`` -> ``nn.AvgPool2d`` (the converter
  makes it a sum pooling and divides the next weights by k²); pooling padding must be 0;
- ``IF`` (``v += r * I``; spike at ``v >= v_threshold``) -> ``IAFSqueeze`` with threshold
  ``v_threshold / r``. That ratio must be one value per channel; when it differs between
  channels the preceding weights of each channel are scaled so that one threshold serves all
  (exact). The reset is a subtraction and the floor ``min_v_mem = -threshold`` (sinabs'
  importer does the same) unless the node's metadata, as flexsnn writes it, says otherwise
  (``min_v_mem``, ``reset``: ``subtract``/``zero``, ``spike``: ``multi``/``single``);
- ``LIF`` whose ``tau`` is infinite everywhere (no leak): the same IF. Its input gain is ``r``,
  or 1 where ``r`` is infinite too (snnTorch writes ``beta=1`` as ``tau = r = inf``).

Refused by name, with the reason and the fix: a leaky ``LIF`` (finite ``tau``), ``CubaLIF``,
``LI``, ``CubaLI``, ``I``, ``Scale``, ``Threshold``, ``Delay``, ``Conv1d``, nested graphs,
recurrent edges (cycles), branches and merges, and any other node type.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.errors import CheckpointError, ChipConstraintError, ConfigError, Violation

#: graph metadata key flexsnn writes: JSON ``{node key: source layer name}``
NAMES_KEY = "flexsnn_layer_names"
#: graph metadata key flexsnn writes when the output layer was widened for the readout block:
#: JSON ``{"num_classes": n, "channel_erratum": bool}``
READOUT_KEY = "flexsnn_readout"

_REFUSED = {
    "CubaLIF": "a current-based LIF has a synaptic current and a leak; the chip's neurons have neither",
    "LI": "a leaky integrator without spikes has no chip equivalent",
    "CubaLI": "a leaky integrator without spikes has no chip equivalent",
    "I": "an integrator without spikes has no chip equivalent",
    "Scale": "a per-neuron scale between layers has no chip equivalent",
    "Threshold": "a bare threshold without a membrane has no chip equivalent",
    "Delay": "the chip has no programmable delays",
    "Conv1d": "the chip runs 2-D convolutions only",
    "NIRGraph": "nested graphs (e.g. snnTorch's RLeaky/RSynaptic) hold recurrent connections",
}


def read_nir(path: str | Path):
    """``nir.read`` with a named error for a missing or unreadable file."""
    import nir

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "NIR file not found", "give the path of a .nir file (HDF5) written by nir.write")
    try:
        return nir.read(str(path))
    except Exception as err:  # h5py/nir raise many types for a damaged file
        raise CheckpointError(path, f"not a readable NIR graph ({type(err).__name__}: {err})",
                              "write it again with nir.write (or the producing tool's NIR export)") from err


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(v: Any, what: str, where: str) -> tuple[int, int]:
    if isinstance(v, str):
        raise ChipConstraintError([Violation(where, what, v, "explicit integers",
                                             "write the graph with integer padding")])
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _shape_of(types: Any) -> Optional[tuple[int, ...]]:
    """The one shape in a NIR ``input_type``/``output_type`` dict (None when absent/empty)."""
    if not types:
        return None
    vals = list(types.values()) if isinstance(types, dict) else [types]
    if len(vals) != 1 or vals[0] is None:
        return None
    a = np.asarray(vals[0]).ravel()
    if a.size == 0 or np.any(a < 1):
        return None
    return tuple(int(v) for v in a)


def graph_input_shape(graph) -> Optional[tuple[int, int, int]]:
    """``(C, H, W)`` from the graph's ``Input`` node (a leading batch of 1 dropped), or None."""
    import nir

    for node in graph.nodes.values():
        if isinstance(node, nir.Input):
            shape = _shape_of(node.input_type)
            if shape is None:
                return None
            if len(shape) == 4 and shape[0] == 1:
                shape = shape[1:]
            if len(shape) == 1:
                return (shape[0], 1, 1)
            return tuple(shape) if len(shape) == 3 else None  # type: ignore[return-value]
    return None


def _chain(graph, where_graph: str) -> list[str]:
    """Node keys from Input to Output; refuses cycles, branches, merges and missing ends."""
    import nir

    nodes = graph.nodes
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ChipConstraintError([Violation(where_graph, "Input/Output nodes", (len(inputs), len(outputs)),
                                             "exactly one Input and one Output",
                                             "export a single-input, single-output network")])
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in graph.edges:
        for end in (a, b):
            if end not in nodes:
                raise ChipConstraintError([Violation(where_graph, "edge", (a, b), "edges between existing nodes",
                                                     "repair the graph")])
        succ[a].append(b)
        pred[b].append(a)
    bad = []
    for k in nodes:
        if len(succ[k]) > 1:
            bad.append(Violation(f"NIR node {k!r} ({type(nodes[k]).__name__})", "branch", succ[k],
                                 "one successor (a chain of layers)",
                                 "flexsnn maps NIR chains; export the network without branches"))
        if len(pred[k]) > 1:
            bad.append(Violation(f"NIR node {k!r} ({type(nodes[k]).__name__})", "merge", pred[k],
                                 "one predecessor (a chain of layers)",
                                 "flexsnn maps NIR chains; export the network without merges"))
    # a cycle reachable from anywhere is a recurrent edge
    state: dict[str, int] = {}

    def visit(k: str, path: list[str]) -> None:
        state[k] = 1
        for nxt in succ[k]:
            if state.get(nxt) == 1:
                bad.append(Violation(f"NIR edge {k!r} -> {nxt!r}", "recurrent edge", " -> ".join(path + [nxt]),
                                     "a feed-forward graph",
                                     "retrain without recurrence (the chip's feedback is core to core, "
                                     "which NIR graphs from other tools do not describe)"))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[k] = 2

    for k in nodes:
        if k not in state:
            visit(k, [k])
    if bad:
        raise ChipConstraintError(bad)
    order = [inputs[0]]
    while succ[order[-1]]:
        order.append(succ[order[-1]][0])
    if order[-1] != outputs[0] or len(order) != len(nodes):
        missing = sorted(set(nodes) - set(order))
        raise ChipConstraintError([Violation(where_graph, "connectivity", f"unreached nodes {missing}"
                                             if missing else f"chain ends at {order[-1]!r}",
                                             "every node on one path from Input to Output",
                                             "remove unconnected nodes")])
    return order


def _module_key(key: str, used: set[str]) -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", str(key)) or "node"
    out, i = base, 1
    while out in used:
        out, i = f"{base}_{i}", i + 1
    used.add(out)
    return out


def _neuron_scale(thr_eff: np.ndarray, where: str) -> tuple[float, Optional[np.ndarray]]:
    """One threshold for the layer and, if channels differ, per-channel weight factors."""
    t = np.atleast_1d(thr_eff)
    if t.ndim == 0 or t.size == 1:
        return float(t.ravel()[0]), None
    flat = t.reshape(t.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        c = int(np.argmax(np.any(flat != flat[:, :1], axis=1)))
        raise ChipConstraintError([Violation(where, "v_threshold / r", f"varies within channel {c}",
                                             "one value per channel (the chip has one threshold per layer)",
                                             "use one threshold per layer or per channel")])
    per_c = flat[:, 0]
    if np.all(per_c == per_c[0]):
        return float(per_c[0]), None
    if np.any(per_c <= 0):
        raise ChipConstraintError([Violation(where, "v_threshold / r", float(per_c.min()), "> 0",
                                             "use positive thresholds")])
    top = float(per_c.max())
    return top, top / per_c


def nir_to_sequential(graph, *, where: str = "NIR graph") -> tuple[nn.Sequential, dict[str, str]]:
    """Convert a NIR graph to an ``nn.Sequential`` (see the module docstring).

    Returns:
        ``(model, names)``: ``names`` maps each child's name in ``model`` to the layer name to
        report (flexsnn's own name from the graph metadata, else the NIR node key).

    Raises:
        ChipConstraintError: every refused node, by key and type, with the reason and a fix.
    """
    import nir
    import sinabs.activation as sa
    import sinabs.layers as sl

    if not isinstance(graph, nir.NIRGraph):
        raise ConfigError("graph", type(graph).__name__, "a nir.NIRGraph", "read it with nir.read(path)")
    try:
        meta_names = json.loads(graph.metadata.get(NAMES_KEY, "{}")) if graph.metadata else {}
    except (TypeError, ValueError):
        meta_names = {}
    refused = [Violation(f"NIR node {k!r} ({type(n).__name__})", "node type", type(n).__name__,
                         "Input, Conv2d, IF, LIF without leak, SumPool2d, AvgPool2d, Flatten, Affine, Linear, Output",
                         _REFUSED.get(type(n).__name__, "no chip equivalent") + "; retrain with IF neurons and "
                         "the accepted layers")
               for k, n in graph.nodes.items()
               if type(n).__name__ in _REFUSED or not isinstance(n, (
                   nir.Input, nir.Output, nir.Conv2d, nir.IF, nir.LIF, nir.SumPool2d, nir.AvgPool2d,
                   nir.Flatten, nir.Affine, nir.Linear))]
    for k, n in graph.nodes.items():
        if isinstance(n, nir.LIF) and not np.all(np.isinf(_arr(n.tau))):
            tau = _arr(n.tau)
            refused.append(Violation(
                f"NIR node {k!r} (LIF)", "leak (tau)", f"{float(tau[np.isfinite(tau)].ravel()[0]):g}",
                "tau = inf (no leak: integrate-and-fire)",
                "retrain with IF neurons, or set the leak to zero (tau = inf, e.g. snnTorch beta=1): "
                "the chip's neurons do not leak"))
    if refused:
        raise ChipConstraintError(refused)
    order = _chain(graph, where)
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    names: dict[str, str] = {}
    used: set[str] = set()
    last_weight: Optional[nn.Module] = None
    for key in order:
        node = graph.nodes[key]
        nwhere = f"NIR node {key!r} ({type(node).__name__})"
        mod: Optional[nn.Module] = None
        if isinstance(node, nir.Conv2d):
            w = _arr(node.weight)
            if w.ndim != 4:
                raise ChipConstraintError([Violation(nwhere, "weight shape", w.shape, "[c_out, c_in, kh, kw]",
                                                     "write a 2-D convolution")])
            groups = int(np.asarray(node.groups).ravel()[0])
            conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:], stride=_pair(node.stride, "stride", nwhere),
                             padding=_pair(node.padding, "padding", nwhere),
                             dilation=_pair(node.dilation, "dilation", nwhere), groups=groups, bias=True)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                b = _arr(node.bias) if node.bias is not None else np.zeros(w.shape[0])
                conv.bias.copy_(torch.from_numpy(np.broadcast_to(b, (w.shape[0],)).astype(np.float32)))
            mod = last_weight = conv
        elif isinstance(node, (nir.Affine, nir.Linear)):
            w = _arr(node.weight)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                if isinstance(node, nir.Affine):
                    lin.bias.copy_(torch.from_numpy(np.broadcast_to(_arr(node.bias), (w.shape[0],)).astype(np.float32)))
            mod = last_weight = lin
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            k = _pair(node.kernel_size, "kernel_size", nwhere)
            s = _pair(node.stride, "stride", nwhere)
            if any(_pair(node.padding, "padding", nwhere)):
                raise ChipConstraintError([Violation(nwhere, "padding", tuple(np.asarray(node.padding).tolist()), "0",
                                                     "pool without padding (the chip's pooling has none)")])
            mod = sl.SumPool2d(kernel_size=k, stride=s) if isinstance(node, nir.SumPool2d) else \
                nn.AvgPool2d(kernel_size=k, stride=s)
        elif isinstance(node, nir.Flatten):
            mod = nn.Flatten()  # a chain into a Linear: the converter keeps C, H, W order
        elif isinstance(node, (nir.IF, nir.LIF)):
            r = _arr(node.r)
            if isinstance(node, nir.LIF):
                r = np.where(np.isinf(r), 1.0, r)
            thr = _arr(node.v_threshold)
            if np.any(r <= 0):
                raise ChipConstraintError([Violation(nwhere, "r", float(r.min()), "> 0", "use a positive input gain")])
            threshold, factors = _neuron_scale(thr / r, nwhere)
            if factors is not None:
                if last_weight is None or last_weight.weight.shape[0] != factors.size:
                    raise ChipConstraintError([Violation(nwhere, "v_threshold / r", "differs between channels",
                                                         "one value per layer (no weight layer to fold it into)",
                                                         "use one threshold per layer")])
                with torch.no_grad():
                    f = torch.from_numpy(factors.astype(np.float32))
                    last_weight.weight.mul_(f.reshape(-1, *([1] * (last_weight.weight.dim() - 1))))
                    if last_weight.bias is not None:
                        last_weight.bias.mul_(f)
            meta = getattr(node, "metadata", None) or {}
            floor: Optional[float] = float(meta["min_v_mem"]) if "min_v_mem" in meta else -threshold
            if floor is not None and np.isnan(floor):
                floor = None  # the source had none; the validator refuses it by name
            reset = str(meta.get("reset", "subtract"))
            spike = str(meta.get("spike", "multi"))
            if reset not in ("subtract", "zero") or spike not in ("multi", "single"):
                raise ChipConstraintError([Violation(nwhere, "metadata reset/spike", (reset, spike),
                                                     "reset subtract|zero, spike multi|single", "fix the metadata")])
            mod = sl.IAFSqueeze(spike_threshold=threshold, min_v_mem=floor, batch_size=1,
                                spike_fn=sa.MultiSpike if spike == "multi" else sa.SingleSpike,
                                reset_fn=sa.MembraneSubtract() if reset == "subtract" else sa.MembraneReset())
        if mod is not None:
            name = _module_key(key, used)
            layers[name] = mod
            names[name] = str(meta_names.get(str(key), key))
    return nn.Sequential(layers), names


def graph_readout(graph) -> Optional[tuple[int, bool]]:
    """``(num_classes, channel_erratum)`` when flexsnn wrote the graph with a widened readout layer."""
    raw = (graph.metadata or {}).get(READOUT_KEY)
    if raw is None:
        return None
    try:
        doc = json.loads(str(raw))
        return int(doc["num_classes"]), bool(doc["channel_erratum"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"graph metadata {READOUT_KEY}", raw, 'JSON {"num_classes": n, "channel_erratum": bool}',
                          "write the graph again with flexsnn export --nir") from err


def resolve_input_shape(graph, input_shape: Optional[Sequence[int]], source: str) -> tuple[int, int, int]:
    """The input ``(C, H, W)``: ``input_shape`` if given (it must agree with a full shape in the
    graph), else the graph's ``Input`` node; ConfigError naming ``--input-shape`` otherwise."""
    from_graph = graph_input_shape(graph)
    if input_shape is not None:
        given = tuple(int(v) for v in input_shape)
        if len(given) != 3 or min(given) < 1:
            raise ConfigError("--input-shape", input_shape, "three positive integers C,H,W (e.g. 2,34,34)")
        if from_graph is not None and from_graph != given:
            raise ConfigError("--input-shape", ",".join(map(str, given)),
                              f"the shape of {source}'s Input node {from_graph}",
                              "drop --input-shape or correct it")
        return given  # type: ignore[return-value]
    if from_graph is None:
        raise ConfigError("--input-shape", None, "C,H,W of one input frame",
                          f"{source} has no complete (C, H, W) in its Input node; pass --input-shape")
    return from_graph
