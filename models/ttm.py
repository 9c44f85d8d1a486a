"""Temporal transformation module (TTM): map ``T_in`` frames to ``T_out`` frames.

MTT paper eq. 8 (and appendix A.4): to split ``l`` frames into ``k <= l`` groups as evenly as
possible, group ``i`` (1-based) starts at frame ``round((i-1)*l/k - eps)`` (0-based), i.e.
the ideal boundary ``(i-1)*l/k`` rounded to the nearest integer, ties rounded down (the
official code computes ``round((i+1)*more/fewer - 1e-5)``). Computed here with integers, so
no floating-point tie can go the wrong way.

- Downsampling (``T_out < T_in``): the ``T_in`` input frames form ``T_out`` groups; each
  output frame is the *sum* of its group (values may exceed 1).
- Upsampling (``T_out > T_in``): the ``T_out`` output slots form ``T_in`` groups; each input
  frame is *copied* into every slot of its group.
- ``T_out == T_in``: identity (the input tensor itself is returned).
- ``mode="trim"`` (input stage of event models, the paper's ``TimeTrans_HardTrim``): when
  shortening, keep the first ``T_out`` frames; when lengthening, copy as above.

Example (paper Fig. 4): 5 -> 3 sums frames ``{0,1}, {2}, {3,4}``; 3 -> 5 copies frame 0 to
slots 0 and 1, frame 1 to slot 2, frame 2 to slots 3 and 4.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from flexsnn.errors import ConfigError

TTM_MODES = ("even", "trim")


def group_starts(length: int, groups: int) -> tuple[int, ...]:
    """0-based first index of each of ``groups`` groups over ``length`` items (eq. 8), plus
    ``length`` as a final sentinel; ``1 <= groups <= length``."""
    if not 1 <= groups <= length:
        raise ConfigError("ttm.groups", groups, f"an integer in [1, {length}]")
    # round-half-down of p/q for p = i*l, q = k:  floor((2p + q - 1) / (2q))
    return tuple((2 * i * length + groups - 1) // (2 * groups) for i in range(groups)) + (length,)


def ttm_groups(t_in: int, t_out: int) -> tuple[tuple[int, ...], ...]:
    """For each output frame, the input frames it is made of (``T_out`` tuples).

    Downsampling: a partition of ``range(t_in)`` into consecutive groups (summed).
    Upsampling: one input index per output slot (copied), non-decreasing, each input used.
    Equal: ``((0,), (1,), ...)``.

    Raises:
        ConfigError: ``t_in`` or ``t_out`` below 1.
    """
    for name, value in (("ttm.t_in", t_in), ("ttm.t_out", t_out)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(name, value, "an integer number of time steps >= 1")
    return _groups(int(t_in), int(t_out))


@lru_cache(maxsize=1024)
def _groups(t_in: int, t_out: int) -> tuple[tuple[int, ...], ...]:
    if t_out <= t_in:
        b = group_starts(t_in, t_out)
        return tuple(tuple(range(b[j], b[j + 1])) for j in range(t_out))
    b = group_starts(t_out, t_in)
    return tuple((i,) for i in range(t_in) for _ in range(b[i], b[i + 1]))


def temporal_transform(x: torch.Tensor, t_out: int, *, mode: str = "even") -> torch.Tensor:
    """Apply a TTM to ``x [T_in, ...]`` (time first, any trailing shape), giving
    ``[T_out, ...]`` of the same dtype. Pure; differentiable (sums and copies).

    Args:
        x: frames ``[T_in, B, ...]``, e.g. spike counts per step.
        t_out: number of output frames (>= 1).
        mode: ``"even"`` (eq. 8 sum/copy) or ``"trim"`` (keep the first frames when
            shortening; copy when lengthening).

    Raises:
        ConfigError: bad ``t_out`` or ``mode``, or ``x`` without a time dimension.
    """
    if mode not in TTM_MODES:
        raise ConfigError("ttm.mode", mode, f"one of {TTM_MODES}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ConfigError("ttm input", tuple(x.shape), "a tensor [T_in, ...] with T_in >= 1")
    t_in = int(x.shape[0])
    groups = ttm_groups(t_in, t_out)  # validates t_out
    if t_out == t_in:
        return x
    if t_out > t_in:
        index = torch.tensor([g[0] for g in groups], dtype=torch.long, device=x.device)
        return x.index_select(0, index)
    if mode == "trim":
        return x[:t_out]
    return torch.stack([x[g[0]:g[-1] + 1].sum(0) for g in groups], 0)
