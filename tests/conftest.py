"""Shared fixtures: seeded generators and the real N-MNIST folder (skipped when absent).
Plain helpers live in modules beside the tests (``layout.py``, ``chip_builders.py``), not
here: pytest keeps only one module named ``conftest`` when tests/ and hwtests/ run together."""

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
