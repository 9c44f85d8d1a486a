"""Seeds: one integer fixes data generation, sampling and training."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators, and ask torch for
    deterministic algorithms where they exist (CPU kernels are deterministic already)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent NumPy generator for ``seed`` and an optional stream path, e.g.
    ``numpy_rng(seed, sample_index)`` gives every sample its own reproducible stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def torch_generator(seed: int):
    """A seeded ``torch.Generator`` (CPU)."""
    import torch

    return torch.Generator().manual_seed(seed)
