"""Shared fixtures: seeded generators, the real N-MNIST folder (skipped when absent),
and one layout-assertion helper."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NMNIST_SMALL = Path(os.environ.get("FLEXSNN_NMNIST_SMALL", REPO.parent / "shared" / "data" / "nmnist-small"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh NumPy generator with a fixed seed."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def nmnist_small() -> Path:
    """Path of the real N-MNIST subset; skips the test (with the reason) when absent."""
    if not (NMNIST_SMALL / "Train").is_dir():
        pytest.skip(f"real N-MNIST subset not found at {NMNIST_SMALL} (set FLEXSNN_NMNIST_SMALL)")
    return NMNIST_SMALL


def assert_layout(tensor, shape: tuple, *, name: str = "tensor") -> None:
    """Assert ``tensor.shape == shape``; ``None`` entries in ``shape`` match any size."""
    actual = tuple(tensor.shape)
    assert len(actual) == len(shape) and all(s is None or s == a for s, a in zip(shape, actual)), (
        f"{name}: shape {actual} does not match expected layout {shape}"
    )
