"""Sequence models for sequential MNIST (seed paper A.12): a fully connected LIF TFSNN and an
RNN/GRU baseline of the same size.

:func:`seqfc` is registered in the zoo as ``"seqfc"`` (``build_model("seqfc", ...)``, so
checkpoints reload through :func:`flexsnn.models.checkpoint.load_model`). Its input is the
sequence layout of :mod:`flexsnn.data.seqmnist`: ``x [T, B, 1, 1, F]`` (one step of F
pixels per frame). Blocks (one stage each at ``granularity=1``)::

    fc1: Flatten Linear(F -> hidden) LIF(decay)
    fc2: Linear(hidden -> hidden) LIF(decay) Linear(hidden -> num_classes)   # readout

(``num_hidden`` hidden layers in general; the readout joins the last block.) With
``recurrent=True`` each LIF layer also gets a recurrent weight (``W_rec s_{t-1}`` added to its
current, :class:`~flexsnn.models.neurons.RecurrentSpikingNeuron`): 14,858 parameters at 2 x 64
against the 2 x 64 tanh RNN's 14,986, and it is the variant that reaches the RNN on row-wise
seqMNIST (``benchmarks/seqmnist.py``); the feedforward net can only sum what its leaky
membranes keep of earlier rows. The readout is
a plain linear map of each step's spikes, so the logits are ``[t_n, B, num_classes]`` and the
usual mean-CE applies. For the paper's sequence setting train it with a scheme that has
``non_increasing=True``: the first stage stays at the input's T (every pixel group is seen)
and later stages run at fewer or equal steps (the TTM sums groups of steps).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import RecurrentSpikingNeuron, make_neuron, neuron_config
from flexsnn.models.tfsnn import TFSNN, group_blocks

__all__ = ["seqfc", "RNNClassifier", "RNN_KINDS"]


def seqfc(*, in_features: int = 28, hidden: int = 64, num_hidden: int = 2, num_classes: int = 10,
          decay: float = 0.99, T: int = 28, granularity: int = 1, neuron: Optional[dict] = None,
          recurrent: bool = False, learn_decay: bool = False) -> TFSNN:
    """Fully connected LIF TFSNN for sequences (the paper's seqMNIST net: 2 x 64, decay 0.99).

    Args:
        in_features: F, inputs per step (28 = one MNIST row).
        hidden: width of each hidden layer.
        num_hidden: hidden layers (>= 1), one block each.
        num_classes: outputs.
        decay: membrane leak per step of the ``paper-lif`` neurons (the paper's tau = 0.99).
        T: initial uniform time steps (the sequence length).
        granularity: blocks per stage.
        neuron: other ``paper-lif`` overrides (e.g. ``{"threshold": 0.5}``).
        recurrent: each hidden layer gets a recurrent weight ``hidden x hidden`` (its neurons are
            :class:`~flexsnn.models.neurons.RecurrentSpikingNeuron`: current ``W x_t + W_rec s_{t-1}``),
            the spiking counterpart of a 2-layer RNN of the same widths.
        learn_decay: (with ``recurrent``) a learnable leak per neuron, ``sigmoid(w)``
            initialised at ``decay`` (adds ``hidden`` parameters per layer).
    """
    for name, value in (("in_features", in_features), ("hidden", hidden), ("num_hidden", num_hidden),
                        ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{name}", value, "an integer >= 1")
    for name, value in (("recurrent", recurrent), ("learn_decay", learn_decay)):
        if not isinstance(value, bool):
            raise ConfigError(f"model.{name}", value, "true or false")
    if learn_decay and not recurrent:
        raise ConfigError("model.learn_decay", learn_decay, "false unless recurrent is true",
                          "the per-neuron learnable decay lives in the recurrent neuron: add \"recurrent\": true")
    overrides = {"decay": float(decay), **(neuron or {})}
    blocks = []
    width_in = in_features
    for i in range(num_hidden):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        if recurrent:
            lif = RecurrentSpikingNeuron(neuron_config("paper-lif", **overrides), hidden, learn_decay=learn_decay)
        else:
            lif = make_neuron("paper-lif", **overrides)
        layers += [nn.Linear(width_in, hidden), lif]
        if i == num_hidden - 1:
            layers.append(nn.Linear(hidden, num_classes))
        blocks.append((f"fc{i + 1}", layers))
        width_in = hidden
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="paper-lif", num_classes=num_classes,
                 input_shape=(1, 1, in_features), default_T=T)


RNN_KINDS = ("rnn", "gru")


class RNNClassifier(nn.Module):
    """Recurrent baseline: ``num_layers`` stacked RNN (tanh) or GRU layers of ``hidden`` units and a
    linear readout of the last step's hidden state.

    ``forward(x)``: ``x`` float ``[T, B, ...]`` (time first; trailing dims flattened to F, so the
    seqMNIST layout ``[T, B, 1, 1, F]`` works) -> logits ``[B, num_classes]``.
    """

    def __init__(self, *, kind: str = "rnn", in_features: int = 28, hidden: int = 64, num_layers: int = 2,
                 num_classes: int = 10) -> None:
        super().__init__()
        if kind not in RNN_KINDS:
            raise ConfigError("rnn.kind", kind, f"one of {RNN_KINDS}")
        cls = nn.RNN if kind == "rnn" else nn.GRU
        self.kind = kind
        self.in_features = in_features
        self.rnn = cls(in_features, hidden, num_layers=num_layers)
        self.readout = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], -1)
        if x.shape[-1] != self.in_features:
            raise ConfigError("rnn input", tuple(x.shape), f"[T, B, ...] with {self.in_features} features per step")
        out, _ = self.rnn(x)
        return self.readout(out[-1])
