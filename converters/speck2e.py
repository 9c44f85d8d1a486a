"""Speck2e hardware limits, as data, and the per-core memory formulas.

Sources: sinabs' Speck documentation and ``sinabs/backend/dynapcnn/chips/dynapcnn.py``, and
the Speck2e spec sheet (see ARCHITECTURE.md). NumPy only: chip images are checked against
this table without torch or samna.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KI = 1024


@dataclass(frozen=True)
class ChipLimits:
    """Limits of one chip. Memory sizes are in entries (words), per core id."""

    name: str
    n_cores: int
    kernel_memory: tuple[int, ...]
    neuron_memory: tuple[int, ...]
    bias_memory: tuple[int, ...]
    max_input_size: int  # each of H, W of a core's input
    max_output_size: int  # each of H, W of a core's output map (before pooling)
    max_features: int  # channels in or out of a core
    max_kernel_size: int  # square kernels only
    strides: tuple[int, ...]
    max_padding: int
    poolings: tuple[int, ...]  # sum pooling per destination, square, stride = kernel
    max_destinations: int
    max_dvs_channels: int
    weight_bits: int  # signed
    bias_bits: int  # signed
    state_bits: int  # signed neuron state, thresholds
    readout_classes: int
    nondeterministic_cores: tuple[int, ...]  # run in parallel on the chip; order not fixed

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(2 ** (self.weight_bits - 1)), 2 ** (self.weight_bits - 1) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(2 ** (self.bias_bits - 1)), 2 ** (self.bias_bits - 1) - 1

    @property
    def state_range(self) -> tuple[int, int]:
        return -(2 ** (self.state_bits - 1)), 2 ** (self.state_bits - 1) - 1


SPECK2E = ChipLimits(
    name="speck2e",
    n_cores=9,
    kernel_memory=(16 * KI, 16 * KI, 16 * KI, 32 * KI, 32 * KI, 64 * KI, 64 * KI, 16 * KI, 16 * KI),
    neuron_memory=(64 * KI, 64 * KI, 64 * KI, 32 * KI, 32 * KI, 16 * KI, 16 * KI, 16 * KI, 16 * KI),
    bias_memory=(KI,) * 9,
    max_input_size=128,
    max_output_size=64,
    max_features=1024,
    max_kernel_size=16,
    strides=(1, 2, 4, 8),
    max_padding=7,
    poolings=(1, 2, 4),
    max_destinations=2,
    max_dvs_channels=2,
    weight_bits=8,
    bias_bits=8,
    state_bits=16,
    readout_classes=15,
    nondeterministic_cores=(0, 1),
)


def _ceil_log2(n: int) -> int:
    return 0 if n <= 1 else math.ceil(math.log2(n))


def kernel_memory_entries(c_in: int, c_out: int, kernel_h: int, kernel_w: int) -> int:
    """Kernel memory a layer needs: ``c_in * 2**(ceil(log2(kh*kw)) + ceil(log2(c_out)))``."""
    return c_in * 2 ** (_ceil_log2(kernel_h * kernel_w) + _ceil_log2(c_out))


def neuron_memory_entries(c_out: int, out_h: int, out_w: int) -> int:
    """Neuron memory a layer needs: ``c_out * 2**(ceil(log2 H) + ceil(log2 W))``."""
    return c_out * 2 ** (_ceil_log2(out_h) + _ceil_log2(out_w))


def bias_memory_entries(c_out: int) -> int:
    """Bias memory a layer needs: one entry per output channel."""
    return c_out
