"""ONNX export of ONE time step of a chip-ready model, with the membrane states as explicit
inputs and outputs, so any ONNX runtime can step the network over T frames.

Graph signature (B = batch, per IAF layer i its map shape ``(C_i, H_i, W_i)``)::

    inputs:  x [B, C, H, W] float32 (one frame), v0 [B, C_0, H_0, W_0], v1 ..., v{n-1}
    outputs: spikes [B, K] float32 (output layer's spike counts), v0_next, ..., v{n-1}_next

Each IAF step is sinabs' (``MultiSpike``, ``MembraneSubtract``, ``min_v_mem``)::

    v = v + I;  s = (v > 0) * floor(v / thr);  v = v - s * thr;  v = relu(v - m) + m

with ``SingleSpike`` ``s = (v >= thr)``, and with ``MembraneReset`` (the chip's reset to zero)
``v = v * (s == 0)`` instead of the subtraction.

Start from zeros (:func:`initial_states`); :func:`run_onnx` steps an ``onnxruntime`` session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.io_utils import atomic_path


class OneStep(nn.Module):
    """One time step of a chip-ready model: ``(x_t, *v) -> (spikes_t, *v_next)`` (pure)."""

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        import sinabs.layers as sl

        self.layers = nn.ModuleList()
        self.kinds: list[str] = []
        import sinabs.activation as sa

        thresholds, floors = [], []
        self.single: list[bool] = []
        self.zero: list[bool] = []
        for m in model:
            if isinstance(m, sl.IAF):
                self.kinds.append("iaf")
                self.single.append(m.spike_fn is sa.SingleSpike)
                self.zero.append(isinstance(m.reset_fn, sa.MembraneReset))
                thresholds.append(float(m.spike_threshold))
                floors.append(None if m.min_v_mem is None else float(m.min_v_mem))
                self.layers.append(nn.Identity())
            else:
                self.kinds.append("layer")
                self.layers.append(m)
        self.thresholds = thresholds
        self.floors = floors

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        new_states = []
        j = 0
        for kind, layer in zip(self.kinds, self.layers):
            if kind == "layer":
                x = layer(x)
                continue
            thr, m = self.thresholds[j], self.floors[j]
            v = states[j] + x
            if self.single[j]:
                s = (v >= thr).to(v.dtype)
            else:
                s = (v > 0).to(v.dtype) * torch.floor(v / thr)
            v = v * (s == 0).to(v.dtype) if self.zero[j] else v - s * thr
            if m is not None:
                v = torch.relu(v - m) + m
            new_states.append(v)
            x = s
            j += 1
        return (x.flatten(1), *new_states)


def state_shapes(model: nn.Sequential, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Per IAF layer, the ``(C, H, W)`` of its membrane state."""
    import sinabs.layers as sl

    shapes = []
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for m in model:
            if isinstance(m, sl.IAF):
                shapes.append(tuple(x.shape[1:]))
            else:
                x = m(x)
    return shapes


def initial_states(model: nn.Sequential, input_shape: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Zero membrane states ``[B, C_i, H_i, W_i]`` float32, one per IAF layer."""
    return [np.zeros((batch_size, *s), dtype=np.float32) for s in state_shapes(model, input_shape)]


def export_onnx(model: nn.Sequential, path: str | Path, *, input_shape: Sequence[int], opset: int = 17) -> Path:
    """Write the one-step graph of ``model`` (see module docstring) atomically; batch is dynamic."""
    step = OneStep(model).eval()
    shapes = state_shapes(model, input_shape)
    x = torch.zeros(1, *input_shape)
    states = tuple(torch.zeros(1, *s) for s in shapes)
    in_names = ["x"] + [f"v{i}" for i in range(len(shapes))]
    out_names = ["spikes"] + [f"v{i}_next" for i in range(len(shapes))]
    dyn = {n: {0: "batch"} for n in in_names + out_names}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.onnx.export(step, (x, *states), str(tmp), input_names=in_names, output_names=out_names,
                          dynamic_axes=dyn, opset_version=opset, dynamo=False)
    return path


def run_onnx(path: str | Path, frames: np.ndarray) -> np.ndarray:
    """Run the one-step ONNX graph over ``frames [T, B, C, H, W]`` float32 from zero state with
    onnxruntime; returns output spikes ``[T, B, K]`` float32."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    shapes = [i.shape for i in sess.get_inputs()[1:]]
    b = frames.shape[1]
    states = [np.zeros((b, *s[1:]), dtype=np.float32) for s in shapes]
    out = []
    for t in range(frames.shape[0]):
        res = sess.run(None, dict(zip(names, [frames[t].astype(np.float32), *states])))
        out.append(res[0])
        states = res[1:]
    return np.stack(out, 0)
