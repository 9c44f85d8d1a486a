"""NIR export of a chip-ready model (``sinabs.nir.to_nir`` + the shape fields sinabs leaves empty).

sinabs writes ``nir.Conv2d(input_shape=None)`` and ``nir.SumPool2d`` without input/output types,
which ``nir.write`` cannot serialise. :func:`to_nir_graph` fills them from a shape pass over the
model. Round trip: :func:`load_nir` (``sinabs.nir.from_nir``) gives back a sinabs model with the
same spikes. NIR's ``IF`` node has no lower bound, and sinabs re-imports it with
``min_v_mem = -threshold``; other lower bounds are reported (logged) as not representable there.

For flexsnn's own reader (:mod:`.from_nir`) each ``IF`` node also carries ``metadata``
``{"min_v_mem", "reset": "subtract"|"zero", "spike": "multi"|"single"}`` and the graph's
metadata maps node keys to the source layer names (``flexsnn_layer_names``), so that
flexsnn -> NIR -> flexsnn gives an identical ChipImage (only ``source`` differs: it names the
file the image was exported from).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.converters.chip_model import copy_model, set_batch_size
from flexsnn.io_utils import atomic_path

log = logging.getLogger(__name__)


def _layer_shapes(model: nn.Sequential, input_shape: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) without batch of every layer of ``model`` (on zeros)."""
    shapes = []
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for layer in model:
            y = layer(x)
            shapes.append((tuple(x.shape[1:]), tuple(y.shape[1:])))
            x = y
    return shapes


def to_nir_graph(model: nn.Sequential, input_shape: Sequence[int], *, names: Optional[Sequence[str]] = None,
                 readout=None):
    """A complete ``nir.NIRGraph`` of a chip-ready model (input ``(C, H, W)`` per sample).

    ``names[i]``: the source name of chip-ready layer i (stored in the graph metadata);
    ``readout``: the image's :class:`~flexsnn.converters.chip_image.ReadoutConfig` when the
    model's output layer was widened for it (stored, so that the re-import does not read the
    widened channels as classes).
    """
    import nir
    import sinabs.activation as sa
    import sinabs.layers as sl

    from flexsnn.converters.from_nir import NAMES_KEY, READOUT_KEY
    from sinabs.nir import to_nir

    shape = tuple(int(v) for v in input_shape)
    work = copy_model(model)
    set_batch_size(work, 1)
    for i, m in enumerate(work):
        if isinstance(m, sl.IAF) and m.min_v_mem is not None and \
                float(m.min_v_mem) != -float(m.spike_threshold):
            log.warning("layer %d: min_v_mem %g is not -threshold (%g); NIR's IF node cannot hold it and "
                        "readers such as sinabs.from_nir use -threshold", i, float(m.min_v_mem),
                        float(m.spike_threshold))
    shapes = _layer_shapes(work, shape)
    graph = to_nir(work, torch.zeros(1, *shape))
    for i, (layer, (s_in, s_out)) in enumerate(zip(work, shapes)):
        key = str(i)
        node = graph.nodes.get(key)
        if node is None:
            continue
        if isinstance(node, nir.Conv2d):
            graph.nodes[key] = nir.Conv2d(
                input_shape=tuple(int(v) for v in s_in[1:]), weight=np.asarray(node.weight),
                stride=node.stride, padding=node.padding, dilation=node.dilation, groups=node.groups,
                bias=np.asarray(node.bias))
        elif node.input_type.get("input") is None or any(v is None for v in node.output_type.values()):
            node.input_type = {"input": np.array(s_in)}
            node.output_type = {"output": np.array(s_out)}
        if isinstance(node, nir.IF) and isinstance(layer, sl.IAF):
            node.metadata = {
                "min_v_mem": float("nan") if layer.min_v_mem is None else float(layer.min_v_mem),
                "reset": "zero" if isinstance(layer.reset_fn, sa.MembraneReset) else "subtract",
                "spike": "single" if layer.spike_fn is sa.SingleSpike else "multi",
            }
    graph.metadata = dict(graph.metadata or {})
    if names is not None:
        graph.metadata[NAMES_KEY] = json.dumps({str(i): str(n) for i, n in enumerate(names)})
    if readout is not None:
        graph.metadata[READOUT_KEY] = json.dumps({"num_classes": int(readout.num_classes),
                                                  "channel_erratum": bool(readout.channel_erratum)})
    return graph


def export_nir(model: nn.Sequential, path: str | Path, *, input_shape: Sequence[int],
               names: Optional[Sequence[str]] = None, readout=None) -> Path:
    """Write the chip-ready ``model`` as a NIR file (HDF5) atomically; returns the path.
    ``names``, ``readout``: see :func:`to_nir_graph`."""
    import nir

    graph = to_nir_graph(model, input_shape, names=names, readout=readout)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return path


def load_nir(path: str | Path, *, batch_size: int = 1) -> nn.Module:
    """Read a NIR file back into a sinabs model (``sinabs.nir.from_nir``), input ``[B*T, C, H, W]``."""
    import nir
    from sinabs.nir import from_nir

    return from_nir(nir.read(str(path)), batch_size=batch_size)


def run_nir_model(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a model from :func:`load_nir` on ``x [T, B, C, H, W]`` from reset state -> spikes ``[T, B, K]``.

    (nirtorch's executor returns ``(output, state)``; the sinabs layers inside keep their own state.)
    """
    from flexsnn.converters.chip_model import from_sinabs_layout, reset_states, to_sinabs_layout

    reset_states(module)
    set_batch_size(module, x.shape[1])
    out = module(to_sinabs_layout(x))
    if isinstance(out, tuple):
        out = out[0]
    return from_sinabs_layout(out, x.shape[0]).flatten(2)
