"""Time-step schemes: which temporal configurations a training iteration runs.

A *temporal configuration* is a tuple ``(t_1, ..., t_n)`` of time steps, one per stage of a
:class:`~flexsnn.models.tfsnn.TFSNN` (input stage first). Three schemes (seed paper §4):

- ``sdt`` (standard direct training): one configuration per iteration, every stage at ``T``.
- ``nmt`` (naive mixture training): ``s`` configurations per iteration, each *uniform*
  (one T for the whole net; for event data the input stage keeps the data's T and the later
  stages share one sampled T).
- ``mtt`` (mixed time-step training): ``s`` configurations per iteration, each stage sampled
  on its own.

Ranges. Static data (the input is repeated, any input T works): every stage draws from
``[t_min, t_max]``. Event data (the paper's Speck code): the input stage keeps the data's
``T`` and the later stages draw from ``U[T - r_left, T + r_right]`` clipped to ``>= 1``.
``non_increasing=True`` restricts every configuration to ``t_1 >= t_2 >= ... >= t_n`` with
the first stage fixed at the input's T (``T`` for event data, ``t_max`` for static data).

The chip's regime (issue 15). The asynchronous chip behaves like very fine time bins (about
T = 100 for a 300 ms recording), so the input stage's T can be drawn too: with
``t_input_min`` / ``t_input_max`` set (event data, NMT/MTT), each configuration draws ``t_1``
from ``[t_input_min, t_input_max]``; the trainer then bins the data into ``data_T =
t_input_max`` frames and sums them into ``t_1`` frames by the TTM's even grouping
(:func:`input_frames`), i.e. ``t_1`` frames over the sample's duration. ``sampling=
"log-uniform"`` draws every sampled T with ``P(t) ~ log((t + 1) / t)`` (as many draws in
[1, 10] as in [10, 100]) instead of uniformly.

Sampling is driven only by the generator passed in; :func:`step_generator` derives one from
``(base_seed, global_step)`` so that every DDP rank draws the same configurations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
import torch

from flexsnn.errors import ConfigError
from flexsnn.seeding import numpy_rng

SCHEMES = ("sdt", "nmt", "mtt")
DATA_KINDS = ("event", "static")
SAMPLINGS = ("uniform", "log-uniform")
#: Stream id of the configuration sampler inside :func:`flexsnn.seeding.numpy_rng`.
SCHEME_STREAM = 0x5C4E

Generator = Union[np.random.Generator, torch.Generator]
TemporalConfig = tuple[int, ...]


@dataclass(frozen=True)
class SchemeConfig:
    """How training picks temporal configurations.

    Attributes:
        name: ``"sdt"``, ``"nmt"`` or ``"mtt"``.
        T: the data's number of time bins (event data; also SDT's T). Static data: SDT's T.
        data_kind: ``"event"`` (input stage keeps ``T``) or ``"static"`` (all stages vary).
        s: configurations per iteration for NMT/MTT (each with its own forward and backward,
            one optimizer step). SDT always runs one.
        t_min, t_max: stage T range for static data; for event data they give the defaults
            ``r_left = T - t_min`` and ``r_right = t_max - T``. ``t_max=None`` means ``T``.
        r_left, r_right: event data: later stages draw from ``[T - r_left, T + r_right]``
            (clipped to ``>= 1``). ``None`` derives them from ``t_min`` / ``t_max``.
        non_increasing: only configurations with ``t_1 >= t_2 >= ... >= t_n``, first stage
            fixed at the input's T (the drawn one when ``t_input_max`` is set).
        t_input_min, t_input_max: event data, NMT/MTT: draw the input stage's T from this
            inclusive range (frames over the sample's duration); None = the input keeps ``T``.
        sampling: ``"uniform"`` or ``"log-uniform"`` draws of every sampled T.
        include_max: NMT/MTT: the first of each step's ``s`` configurations is
            :meth:`max_config` (every stage at its largest T) instead of a draw, so every step
            also trains the full-T model the others are compared with; same cost per step.
    """

    name: str = "sdt"
    T: int = 10
    data_kind: str = "event"
    s: int = 3
    t_min: int = 1
    t_max: int | None = None
    r_left: int | None = None
    r_right: int | None = None
    non_increasing: bool = False
    t_input_min: int | None = None
    t_input_max: int | None = None
    sampling: str = "uniform"
    include_max: bool = False

    def __post_init__(self) -> None:
        if self.name not in SCHEMES:
            raise ConfigError("scheme.name", self.name, f"one of {', '.join(SCHEMES)}")
        if self.data_kind not in DATA_KINDS:
            raise ConfigError("scheme.data_kind", self.data_kind, f"one of {', '.join(DATA_KINDS)}")
        for fname in ("T", "s", "t_min"):
            v = getattr(self, fname)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"scheme.{fname}", v, "an integer >= 1")
        if self.t_max is not None:
            if not isinstance(self.t_max, (int, np.integer)) or self.t_max < self.t_min:
                raise ConfigError("scheme.t_max", self.t_max, f"an integer >= t_min ({self.t_min})")
        for fname in ("r_left", "r_right"):
            v = getattr(self, fname)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 0):
                raise ConfigError(f"scheme.{fname}", v, "an integer >= 0 or None")
        if self.data_kind == "event":
            if self.t_min > self.T and self.r_left is None:
                raise ConfigError("scheme.t_min", self.t_min, f"<= T ({self.T}) for event data",
                                  "or give r_left explicitly")
            if self.t_max is not None and self.t_max < self.T and self.r_right is None:
                raise ConfigError("scheme.t_max", self.t_max, f">= T ({self.T}) for event data",
                                  "or give r_right explicitly")
        elif self.name == "sdt" and not (self.t_min <= self.T <= self.resolved_t_max):
            raise ConfigError("scheme.T", self.T, f"within [t_min, t_max] = [{self.t_min}, {self.resolved_t_max}]")
        if self.sampling not in SAMPLINGS:
            raise ConfigError("scheme.sampling", self.sampling, f"one of {', '.join(SAMPLINGS)}",
                              "e.g. --t-sampling log-uniform")
        if (self.t_input_min is None) != (self.t_input_max is None):
            raise ConfigError("scheme.t_input_range", (self.t_input_min, self.t_input_max),
                              "both ends or neither", "e.g. --t-input-range 1,100")
        if not isinstance(self.include_max, (bool, np.bool_)):
            raise ConfigError("scheme.include_max", self.include_max, "true or false")
        if self.include_max and self.name == "sdt":
            raise ConfigError("scheme.include_max", self.include_max, "False with sdt",
                              "SDT trains its one configuration already; use nmt or mtt")
        if self.t_input_max is not None:
            lo, hi = self.t_input_min, self.t_input_max
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi)) \
                    or lo < 1 or hi < lo:
                raise ConfigError("scheme.t_input_range", (lo, hi), "integers 1 <= min <= max",
                                  "e.g. --t-input-range 1,100")
            if self.name == "sdt" or self.data_kind != "event":
                raise ConfigError("scheme.t_input_range", (lo, hi), "only with event data and nmt/mtt",
                                  "SDT keeps one T; static data draw every stage from [t_min, t_max]")

    # -- derived ranges -------------------------------------------------------------------
    @property
    def resolved_t_max(self) -> int:
        """``t_max`` with ``None`` resolved to ``T``."""
        return self.T if self.t_max is None else int(self.t_max)

    @property
    def stage_range(self) -> tuple[int, int]:
        """Inclusive ``(lo, hi)`` range of the sampled stages (the later stages for event data)."""
        if self.data_kind == "static":
            return int(self.t_min), self.resolved_t_max
        r_left = self.T - self.t_min if self.r_left is None else self.r_left
        r_right = self.resolved_t_max - self.T if self.r_right is None else self.r_right
        return max(1, self.T - r_left), self.T + r_right

    @property
    def t_range(self) -> tuple[int, int]:
        """``(T_min, T_max)`` over all stages this scheme can produce (for checkpoints)."""
        if self.name == "sdt":
            return self.T, self.T
        lo, hi = self.stage_range
        if self.data_kind == "event":
            lo, hi = min(lo, self.T), max(hi, self.T)
        if self.draws_input:
            lo, hi = min(lo, int(self.t_input_min)), max(hi, int(self.t_input_max))
        if self.non_increasing:
            hi = self.data_T if self.draws_input else self.input_T
        return lo, hi

    @property
    def draws_input(self) -> bool:
        """True when the input stage's T is drawn (``t_input_max`` set)."""
        return self.t_input_max is not None

    @property
    def data_T(self) -> int:
        """Frames the training data are binned into (``t_input_max`` when the input T is drawn)."""
        return int(self.t_input_max) if self.draws_input else int(self.T)

    @property
    def T_max(self) -> int:
        """The largest stage T (BN calibration runs at it)."""
        return self.t_range[1]

    @property
    def input_T(self) -> int:
        """The first stage's T when it is fixed (event data, or ``non_increasing``)."""
        return self.T if self.data_kind == "event" else self.resolved_t_max

    @property
    def configs_per_step(self) -> int:
        """Forward/backward passes per optimizer step (1 for SDT, ``s`` otherwise)."""
        return 1 if self.name == "sdt" else int(self.s)

    def max_config(self, num_stages: int) -> TemporalConfig:
        """The configuration BN calibration uses: every stage at its largest T.

        For event data the input stage stays at the data's ``T``.
        """
        _check_stages(num_stages)
        if self.name == "sdt":
            return (self.T,) * num_stages
        if self.data_kind == "event":
            head = self.data_T
            hi = min(self.stage_range[1], head) if self.non_increasing else self.stage_range[1]
            return (head,) + (hi,) * (num_stages - 1)
        return (self.T_max,) * num_stages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``SchemeConfig(**d)`` rebuilds it)."""
        return asdict(self)


def _check_stages(num_stages: int) -> None:
    if not isinstance(num_stages, (int, np.integer)) or num_stages < 1:
        raise ConfigError("num_stages", num_stages, "an integer >= 1")


def step_generator(base_seed: int, global_step: int) -> np.random.Generator:
    """The sampler's generator for one optimizer step: a pure function of the two integers,
    so every DDP rank (and a resumed run) samples the same configurations."""
    return numpy_rng(int(base_seed), SCHEME_STREAM, int(global_step))


def _randint(gen: Generator, lo: int, hi: int, size: int) -> list[int]:
    """``size`` integers uniform in ``[lo, hi]`` (inclusive) from a numpy or torch generator."""
    if size == 0:
        return []
    if isinstance(gen, torch.Generator):
        return [int(v) for v in torch.randint(lo, hi + 1, (size,), generator=gen)]
    if isinstance(gen, np.random.Generator):
        return [int(v) for v in gen.integers(lo, hi + 1, size=size)]
    raise ConfigError("generator", type(gen).__name__, "a numpy.random.Generator or torch.Generator")


def _log_uniform_int(gen: Generator, lo: int, hi: int, size: int) -> list[int]:
    """``size`` integers in ``[lo, hi]`` with ``P(t) ~ log((t + 1) / t)``: ``floor(exp(u))``,
    ``u ~ U[log lo, log(hi + 1))``."""
    if size == 0:
        return []
    a, b = np.log(lo), np.log(hi + 1)
    if isinstance(gen, torch.Generator):
        u = (torch.rand(size, generator=gen, dtype=torch.float64) * (b - a) + a).numpy()
    elif isinstance(gen, np.random.Generator):
        u = gen.uniform(a, b, size=size)
    else:
        raise ConfigError("generator", type(gen).__name__, "a numpy.random.Generator or torch.Generator")
    return [int(min(max(int(np.floor(np.exp(v))), lo), hi)) for v in u]


def _draw(scheme: SchemeConfig, gen: Generator, lo: int, hi: int, size: int) -> list[int]:
    if scheme.sampling == "log-uniform":
        return _log_uniform_int(gen, lo, hi, size)
    return _randint(gen, lo, hi, size)


def input_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    """``x [T_data, B, ...]`` frames summed into ``t`` frames by the TTM's even grouping (group i
    starts at ``round(i * T_data / t)``; upsampling copies), i.e. ``t`` frames over the same
    duration. Identity when ``t == T_data``."""
    from flexsnn.models.ttm import temporal_transform

    return x if x.shape[0] == t else temporal_transform(x, int(t), mode="even")


def _sample_one(scheme: SchemeConfig, num_stages: int, gen: Generator) -> TemporalConfig:
    lo, hi = scheme.stage_range
    if scheme.data_kind == "event":
        t_in = _draw(scheme, gen, int(scheme.t_input_min), int(scheme.t_input_max), 1)[0] \
            if scheme.draws_input else scheme.T
        head: list[int] = [t_in]
        rest = num_stages - 1
    elif scheme.non_increasing:
        head = [scheme.input_T]
        rest = num_stages - 1
    else:
        head, rest = [], num_stages
    if scheme.non_increasing:
        hi = min(hi, head[0])
        lo = min(lo, hi)
    if scheme.name == "nmt":
        t = _draw(scheme, gen, lo, hi, 1)[0] if rest else 0
        tail = [t] * rest
        if scheme.data_kind == "static" and not scheme.non_increasing:
            return tuple(tail)
    else:  # mtt
        tail = _draw(scheme, gen, lo, hi, rest)
    if scheme.non_increasing:
        # iid draws sorted descending: a non-increasing sequence whose sorted marginals are
        # the order statistics of the uniform range; works for any number of stages.
        tail = sorted(tail, reverse=True)
    return tuple(head + tail)


def sample_configs(scheme: SchemeConfig, num_stages: int, generator: Generator) -> list[TemporalConfig]:
    """The temporal configurations of one training iteration.

    Args:
        scheme: the scheme.
        num_stages: stages of the model (``model.num_stages``).
        generator: a ``numpy.random.Generator`` or ``torch.Generator``; the only randomness
            used (use :func:`step_generator` for per-step seeding).

    Returns:
        ``scheme.configs_per_step`` tuples of ``num_stages`` positive ints each (the first one
        :meth:`SchemeConfig.max_config` when ``scheme.include_max``).
    """
    _check_stages(num_stages)
    if scheme.name == "sdt":
        return [(scheme.T,) * num_stages]
    if scheme.include_max:
        return [scheme.max_config(num_stages)] + [_sample_one(scheme, num_stages, generator)
                                                  for _ in range(scheme.s - 1)]
    return [_sample_one(scheme, num_stages, generator) for _ in range(scheme.s)]


def is_non_increasing(config: TemporalConfig) -> bool:
    """True when ``config[i] >= config[i + 1]`` for every i."""
    return all(a >= b for a, b in zip(config, config[1:]))
