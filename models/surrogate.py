"""Surrogate derivatives of the spike function, as small pure functions.

Each surrogate maps the membrane potential ``v`` (after integration, before reset; same
units as the threshold) to a stand-in for ``ds/dv``. The spike function itself is chosen
separately (see :mod:`flexsnn.models.neurons`); the two are combined by
:class:`SpikeFunction`, one ``torch.autograd.Function`` whose backward multiplies the
incoming gradient by the surrogate. Names are the keys of :data:`SURROGATES`.

- ``"triangle"`` (the MTT paper, eq. 6): ``max(0, h - |v - Vth|) / h**2`` with width ``h``
  (``h = 1`` gives the official code's ``max(0, 1 - |v - Vth|)``).
- ``"single-exponential"`` (sinabs' default for ``IAF``/``IAFSqueeze``, used by the paper's
  Speck code): ``exp(-|v - Vth| / (w * Vth)) / (w * Vth)`` with relative width ``w``
  (sinabs: ``grad_width=0.5``, ``grad_scale=1``).
"""

from __future__ import annotations

from typing import Callable

import torch

SurrogateFn = Callable[[torch.Tensor, float, float], torch.Tensor]


def triangle(v: torch.Tensor, threshold: float, width: float) -> torch.Tensor:
    """Triangle surrogate ``max(0, h - |v - Vth|) / h**2`` (MTT paper eq. 6, ``h = width``)."""
    return torch.clamp(width - torch.abs(v - threshold), min=0.0) / (width * width)


def single_exponential(v: torch.Tensor, threshold: float, width: float) -> torch.Tensor:
    """sinabs' ``SingleExponential``: ``exp(-|v - Vth| / a) / a`` with ``a = width * Vth``."""
    abs_width = threshold * width
    return 1.0 / abs_width * torch.exp(-torch.abs(v - threshold) / abs_width)


SURROGATES: dict[str, SurrogateFn] = {
    "triangle": triangle,
    "single-exponential": single_exponential,
}
