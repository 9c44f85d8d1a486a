"""Process groups for flexsnn: ``torch.distributed`` rank/world helpers, initialisation from
the ``torchrun`` environment (``gloo`` on CPU, ``nccl`` on CUDA), collectives for exact
reductions (integer sums, gathers of per-sample records, agreement checks), rank-0-only I/O
helpers, and a local launcher for tests and benchmarks.

Every helper is a cheap no-op when the process runs alone (no ``WORLD_SIZE > 1`` in the
environment, no initialized group): rank 0 of a world of 1, reductions return their input.
Training (:mod:`flexsnn.training.distributed`: DDP, samplers, BN statistics) and sharded
evaluation (:mod:`flexsnn.deploy.sharded`) build on this module; it imports neither.

Environment (set by ``torchrun``; a manual launch sets them on every process):
``RANK`` (global rank), ``WORLD_SIZE`` (processes in total), ``LOCAL_RANK`` (rank on this
machine, selects ``cuda:LOCAL_RANK``), ``MASTER_ADDR`` / ``MASTER_PORT`` (rank 0's address).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

import numpy as np
import torch

from flexsnn.errors import ConfigError, FlexsnnError

log = logging.getLogger(__name__)

#: Environment variables torchrun sets (and that a manual launch must set).
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Default time limit of collective operations (a crashed peer raises instead of hanging).
DEFAULT_TIMEOUT_S = 1800.0

T = TypeVar("T")


class DistributedError(FlexsnnError):
    """Ranks disagree (configurations, dataset sizes) or the process group cannot start."""


# ---------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this machine (selects the GPU, ``cuda:local_rank``).
        backend: ``"gloo"``, ``"nccl"`` or ``None`` when not distributed.
        device: the device this rank computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialized process group with more than one process."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def get_local_rank() -> int:
    """Rank on this machine (``$LOCAL_RANK``, 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and always when not distributed): the process that writes files."""
    return get_rank() == 0


def env_world_size() -> int:
    """``$WORLD_SIZE`` as torchrun set it (1 when absent)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError("$WORLD_SIZE", raw, "an integer >= 1", "unset it or launch with torchrun") from err
    if value < 1:
        raise ConfigError("$WORLD_SIZE", raw, "an integer >= 1", "unset it or launch with torchrun")
    return value


def launched_distributed() -> bool:
    """True when the environment asks for more than one process (e.g. under torchrun)."""
    return env_world_size() > 1


def _pick_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(
    *,
    device: str | torch.device | None = None,
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DistInfo:
    """Join the process group described by the torchrun environment, or stay single.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Under torchrun with
            CUDA each rank takes ``cuda:$LOCAL_RANK``.
        backend: ``"gloo"`` / ``"nccl"``; default gloo on CPU, nccl on CUDA.
        timeout_s: time limit of every collective (s); a dead peer then raises.

    Returns:
        :class:`DistInfo`. Without ``WORLD_SIZE > 1`` nothing is initialized and the result is
        rank 0 of 1 on ``device``. Calling it again after the group exists returns the current
        state.

    Raises:
        ConfigError: missing ``MASTER_ADDR``/``MASTER_PORT``/``RANK`` under ``WORLD_SIZE > 1``,
            nccl requested without CUDA, or an unknown backend.
    """
    want_cuda = (torch.cuda.is_available() if device is None
                 else torch.device(device).type == "cuda")
    if want_cuda and not torch.cuda.is_available():
        raise ConfigError("device", str(device), "cpu (CUDA is not available here)")
    world = env_world_size()
    if world <= 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        dev = torch.device("cuda") if want_cuda and device is None else torch.device(device or "cpu")
        return DistInfo(device=dev)
    local_rank = get_local_rank()
    dev = torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    chosen = backend or _pick_backend(dev)
    if chosen not in ("gloo", "nccl"):
        raise ConfigError("backend", chosen, "gloo (CPU) or nccl (CUDA)")
    if chosen == "nccl" and dev.type != "cuda":
        raise ConfigError("backend", chosen, "gloo on CPU (nccl needs CUDA)", "pass --device cuda or backend gloo")
    if not torch.distributed.is_available():
        raise ConfigError("torch.distributed", "unavailable", "a torch build with distributed support")
    if not torch.distributed.is_initialized():
        missing = [v for v in ENV_VARS if v not in os.environ and v != "LOCAL_RANK"]
        if missing:
            raise ConfigError(f"${missing[0]}", None, "set by torchrun",
                              "launch with `torchrun --nproc-per-node N -m flexsnn.cli ...` or set "
                              + ", ".join("$" + v for v in missing))
        torch.distributed.init_process_group(
            backend=chosen, init_method="env://",
            timeout=_dt.timedelta(seconds=float(timeout_s)),
        )
        log.info("joined process group: rank %d of %d (%s, %s)", get_rank(), get_world_size(), chosen, dev)
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank,
                    backend=torch.distributed.get_backend(), device=dev)


def init_process_group(*, rank: int, world_size: int, master_addr: str = "127.0.0.1",
                       master_port: int, backend: str = "gloo",
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join a process group with explicit parameters (tests, spawned workers).

    Sets the same environment variables torchrun would, then calls :func:`init_from_env`.
    """
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
    device = "cuda" if backend == "nccl" else "cpu"
    return init_from_env(device=device, backend=backend, timeout_s=timeout_s)


def destroy() -> None:
    """Leave the process group (no-op when not initialized)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def distributed_session(*, device: str | torch.device | None = None,
                        backend: str | None = None) -> Iterator[DistInfo]:
    """``with distributed_session() as info:`` joins the group from the environment (when
    launched distributed; INFO logs then come from rank 0 only) and leaves it on exit if it
    joined it here."""
    owned = launched_distributed() and not (torch.distributed.is_available()
                                            and torch.distributed.is_initialized())
    if owned:
        install_rank_zero_logging()
    info = init_from_env(device=device, backend=backend)
    try:
        yield info
    finally:
        if owned:
            destroy()


def free_port() -> int:
    """A free TCP port on localhost (for single-machine launches and tests)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ collectives
def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        if torch.distributed.get_backend() == "nccl":
            torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
        else:
            torch.distributed.barrier()


def broadcast_object(obj: T, *, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (picklable objects; returns ``obj`` alone)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any, *, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank ``dst``; ``None`` elsewhere."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    torch.distributed.gather_object(obj, out, dst=dst)
    return out


def all_reduce_sums(values: Mapping[str, float | int]) -> dict[str, float | int]:
    """Sum each named value over ranks (every rank gets the sums).

    Integers stay integers (reduced as int64, exact); floats are reduced in float64. Reduce
    counts and sums (``correct``, ``samples``, ``loss_sum``) and divide afterwards: an average
    of per-rank averages is wrong when ranks saw different numbers of samples.
    """
    values = dict(values)
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    ints = [k for k in keys if isinstance(values[k], (int, np.integer)) and not isinstance(values[k], bool)]
    floats = [k for k in keys if k not in ints]
    dev = _collective_device()
    out: dict[str, float | int] = {}
    if ints:
        t = torch.tensor([int(values[k]) for k in ints], dtype=torch.int64, device=dev)
        torch.distributed.all_reduce(t)
        out.update({k: int(v) for k, v in zip(ints, t.tolist())})
    if floats:
        t = torch.tensor([float(values[k]) for k in floats], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t)
        out.update({k: float(v) for k, v in zip(floats, t.tolist())})
    return out


def all_reduce_tensor(tensor: torch.Tensor, *, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``tensor`` (``op`` = ``"sum"``, ``"max"``, ``"min"``); a copy alone
    when not distributed. The input is not modified."""
    ops = {"sum": "SUM", "max": "MAX", "min": "MIN"}
    if op not in ops:
        raise ConfigError("op", op, "one of sum, max, min")
    out = tensor.detach().clone()
    if is_distributed():
        moved = out.to(_collective_device())
        torch.distributed.all_reduce(moved, op=getattr(torch.distributed.ReduceOp, ops[op]))
        out = moved.to(tensor.device)
    return out


def fingerprint(obj: Any) -> int:
    """A 63-bit hash of ``repr(obj)`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(repr(obj).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_agreement(obj: Any, *, what: str) -> None:
    """Raise :class:`DistributedError` unless every rank passes an equal ``obj``.

    Used for the temporal configurations of each step (drawn from a generator seeded by the
    step, so they must agree), dataset sizes and resume steps. One small all-reduce of a
    fingerprint; on a mismatch every rank's value is gathered into the message.
    """
    if not is_distributed():
        return
    fp = fingerprint(obj)
    t = torch.tensor([fp, -fp], dtype=torch.int64, device=_collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    # max(fp) and max(-fp) = -min(fp) both equal the local value only when all ranks agree,
    # so every rank takes the error branch (and joins the gather) as soon as one differs.
    if int(t[0]) != fp or int(t[1]) != -fp:
        values = all_gather_objects(repr(obj))
        raise DistributedError(
            f"ranks disagree on {what}: " + "; ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            + ". Sample with a generator seeded by (seed, step) (schemes.step_generator) and give "
              "every rank the same seed and data."
        )


def shard_indices(n: int, *, rank: int | None = None, world_size: int | None = None) -> range:
    """This rank's contiguous share of ``range(n)`` (sizes differ by at most one; rank order
    concatenated gives ``range(n)``). For evaluation: no sample is repeated or dropped."""
    world_size = get_world_size() if world_size is None else int(world_size)
    rank = get_rank() if rank is None else int(rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError("rank", rank, f"0 <= rank < world_size ({world_size})")
    base, rest = divmod(int(n), world_size)
    start = rank * base + min(rank, rest)
    return range(start, start + base + (1 if rank < rest else 0))


# ------------------------------------------------------------------------------ rank-0 I/O
def on_main_process(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``fn(*args, **kwargs)`` on rank 0 only, then wait for every rank (so files rank 0
    writes exist before anyone reads them). Returns ``fn``'s result on rank 0, None elsewhere.
    An exception on rank 0 propagates there; the other ranks then fail at their next
    collective (or the collective timeout)."""
    result = fn(*args, **kwargs) if is_main_process() else None
    barrier()
    return result


class RankZeroFilter(logging.Filter):
    """Logging filter: on ranks other than 0 only records at ``min_level`` (default WARNING)
    or above pass; every record gets a ``rank`` attribute."""

    def __init__(self, min_level: int = logging.WARNING) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        rank = get_rank() if torch.distributed.is_initialized() else int(os.environ.get("RANK", "0") or 0)
        record.rank = rank
        return rank == 0 or record.levelno >= self.min_level


def install_rank_zero_logging(logger: logging.Logger | None = None, *,
                              min_level: int = logging.WARNING) -> RankZeroFilter:
    """Add a :class:`RankZeroFilter` to every handler of ``logger`` (default: root) so
    non-zero ranks only log warnings and errors; returns the filter."""
    logger = logger or logging.getLogger()
    flt = RankZeroFilter(min_level)
    for handler in logger.handlers:
        handler.addFilter(flt)
    return flt


def describe() -> str:
    """One line naming rank, world size and backend (for logs)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return "single process"
    return f"rank {get_rank()} of {get_world_size()} ({torch.distributed.get_backend()})"


# ------------------------------------------------------------------------------ local launch
def _spawn_entry(rank: int, world_size: int, port: int, backend: str, threads: int | None,
                 fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    """Child process of :func:`spawn_local`: join the group, run ``fn(rank, *args)``, report."""
    import pickle
    import traceback

    try:
        if threads:
            torch.set_num_threads(int(threads))
        init_process_group(rank=rank, world_size=world_size, master_port=port, backend=backend)
        try:
            result = fn(rank, *args)
        finally:
            destroy()
        # plain pickle (bytes): tensors are copied, not shared through file descriptors that
        # die with this process
        queue.put((rank, True, pickle.dumps(result)))
    except BaseException:  # reported to the parent, which raises
        queue.put((rank, False, traceback.format_exc()))


def spawn_local(fn: Callable[..., T], world_size: int, *args: Any, backend: str = "gloo",
                timeout_s: float = 120.0, threads_per_process: int | None = None) -> list[T]:
    """Run ``fn(rank, *args)`` in ``world_size`` fresh processes on this machine, joined in one
    process group (localhost, a free port), and return the results in rank order.

    ``fn`` and ``args`` must be picklable (a module-level function). Every child is killed
    when ``timeout_s`` passes or a rank fails, so nothing hangs. For tests and benchmarks;
    real runs use ``torchrun``.

    Raises:
        DistributedError: a rank raised (its traceback is in the message) or the time ran out.
    """
    import multiprocessing as mp
    import pickle
    import queue as _queue
    import time

    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_spawn_entry, daemon=False,
                         args=(r, world_size, port, backend, threads_per_process, fn, args, results))
             for r in range(world_size)]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DistributedError(f"spawn_local: timed out after {timeout_s:.0f} s with ranks "
                                       f"{sorted(set(range(world_size)) - set(out))} unfinished")
            try:
                rank, ok, value = results.get(timeout=min(left, 1.0))
            except _queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in out]
                if dead:
                    raise DistributedError(f"spawn_local: rank {dead[0]} died with exit code "
                                           f"{procs[dead[0]].exitcode}") from None
                continue
            if not ok:
                raise DistributedError(f"spawn_local: rank {rank} failed:\n{value}")
            out[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=5.0)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
    return [out[r] for r in range(world_size)]


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistInfo",
    "DistributedError",
    "ENV_VARS",
    "RankZeroFilter",
    "all_gather_objects",
    "all_reduce_sums",
    "all_reduce_tensor",
    "barrier",
    "broadcast_object",
    "check_agreement",
    "describe",
    "destroy",
    "distributed_session",
    "env_world_size",
    "fingerprint",
    "free_port",
    "gather_objects",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "init_process_group",
    "install_rank_zero_logging",
    "is_distributed",
    "is_main_process",
    "launched_distributed",
    "on_main_process",
    "shard_indices",
    "spawn_local",
]
