"""Multi-process training on PyTorch's own engine (``torch.distributed`` + DDP), with a no-op
path when the process runs alone.

Launch any flexsnn command under ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init_from_env` joins the process
group (``gloo`` on CPU, ``nccl`` on CUDA). Without those variables (or with
``WORLD_SIZE=1``) every helper here is a cheap no-op: rank 0 of a world of 1, models are
not wrapped, reductions return their input.

What the trainer uses (through :class:`DistributedContext`, its ``RunContext``), and why:

- ``batch_size`` is per process, as in PyTorch DDP: the global batch is ``batch_size * W``.
  :func:`shard_order` gives rank ``r`` positions ``r, r + W, ...`` of the epoch's global order
  (trimmed to a multiple of ``W``), so batch ``k`` of all ranks together is batch ``k`` of one
  process with batch ``batch_size * W``, every rank runs the same number of steps and every
  slice has the same size: DDP's mean of the ranks' gradients is then the gradient of the
  mean loss over the global batch, the single-process gradient.
- :func:`wrap_model` / :func:`unwrap_model` / :func:`sync_context`: DDP wrapping; MTT runs
  ``s`` forward/backward passes per optimizer step, so the first ``s - 1`` backward passes run
  under ``no_sync()`` (gradients summed locally) and only the last all-reduces.
- :func:`check_agreement`: verifies that every rank sampled the same temporal
  configurations at a step (they are drawn from a generator seeded by the step).
- :func:`all_reduce_sums`: metrics are reduced as sums (correct counts, sample counts, loss
  sums), never as averages of averages.
- :func:`sync_bn_statistics` / :func:`calibrate_bn_across_ranks`: BN calibration's cumulative
  statistics, reduced weighted by each rank's batch count, equal what one process computes
  over all the ranks' batches.
- :func:`is_main_process`, :func:`on_main_process`, :func:`barrier`,
  :class:`RankZeroFilter`: checkpoints, result files and logs are written by rank 0 only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

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
    launched distributed) and leaves it on exit if it joined it here."""
    owned = launched_distributed() and not (torch.distributed.is_available()
                                            and torch.distributed.is_initialized())
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


# ------------------------------------------------------------------------------ DDP model
def wrap_model(model: nn.Module, *, device: torch.device | str | None = None,
               sync_batch_norm: bool | None = None, **ddp_kwargs: Any) -> nn.Module:
    """``model`` moved to ``device`` and wrapped in ``DistributedDataParallel`` when
    distributed; unchanged (only moved) otherwise.

    Args:
        device: the rank's device (default: the parameters' device).
        sync_batch_norm: convert BN layers to ``SyncBatchNorm`` (batch statistics over the
            global batch, as one process computes them). Default: on CUDA when the model has
            BN. PyTorch's SyncBatchNorm runs on GPU only; on CPU (gloo) BN layers use each
            rank's local batch statistics during training (gradients then differ slightly from
            one process; BN calibration afterwards is exact across ranks).
        ddp_kwargs: passed to DDP (e.g. ``find_unused_parameters``).

    Use :func:`unwrap_model` to reach the TFSNN (``set_temporal_config``, ``state_dict`` for
    checkpoints).
    """
    if device is not None:
        model = model.to(device)
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if sync_batch_norm is None:
        sync_batch_norm = has_bn and dev.type == "cuda"
    if sync_batch_norm and has_bn:
        if dev.type != "cuda":
            raise ConfigError("sync_batch_norm", True, "False on CPU (PyTorch's SyncBatchNorm needs CUDA)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif has_bn:
        log.warning("DDP on %s: BatchNorm uses each rank's local batch statistics while training; "
                    "run BN calibration (calibrate_bn_across_ranks) afterwards", dev)
    if dev.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [dev.index])
        ddp_kwargs.setdefault("output_device", dev.index)
    return DDP(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself when not wrapped)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def sync_context(model: nn.Module, *, sync: bool) -> contextlib.AbstractContextManager:
    """``model.no_sync()`` when ``sync`` is False and the model is DDP-wrapped; else a null
    context. MTT: ``with sync_context(model, sync=(i == s - 1)): loss_i.backward()`` sums the
    gradients of all ``s`` configurations locally and all-reduces once."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not sync and isinstance(model, DDP):
        return model.no_sync()
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------ samplers
def shard_order(order: Sequence[int], *, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Rank ``r``'s share of an epoch's global sample ``order`` for training: positions
    ``r, r + W, r + 2W, ...`` after trimming ``order`` to a multiple of ``W`` (at most
    ``W - 1`` samples of the tail are skipped; with a fresh shuffle each epoch they differ).
    Every rank gets the same count, and batch ``k`` of size ``b`` of all ranks together is
    batch ``k`` of size ``b * W`` of ``order`` (the single-process batch)."""
    world_size = get_world_size() if world_size is None else int(world_size)
    rank = get_rank() if rank is None else int(rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError("rank", rank, f"0 <= rank < world_size ({world_size})")
    usable = len(order) - len(order) % world_size
    return [int(i) for i in list(order)[:usable][rank::world_size]]


def make_sampler(dataset: Any, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False) -> torch.utils.data.Sampler | None:
    """``torch.utils.data.DistributedSampler`` over ``dataset`` when distributed (call
    :func:`set_epoch` every epoch), else None (use the loader's own ``shuffle``). For loaders
    outside the trainer; checks that every rank sees the same dataset size."""
    if not is_distributed():
        return None
    check_agreement(len(dataset), what="dataset size")
    return torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's (batch) sampler when it has one."""
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


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


# ------------------------------------------------------------------------------ BN statistics
def _bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in unwrap_model(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def sync_bn_statistics(model: nn.Module, *, local_batches: int) -> int:
    """Combine BN running statistics that each rank estimated as a cumulative average
    (``momentum=None``) over ``local_batches`` of its own batches into the cumulative average
    over all ranks' batches, in place on every rank. Returns the total batch count.

    ``running_mean`` and ``running_var`` become ``sum_r n_r * stat_r / sum_r n_r``: exactly
    the equal-weight average over every batch that one process would compute (up to float
    summation order); ``num_batches_tracked`` becomes the total.
    """
    if local_batches < 0:
        raise ConfigError("local_batches", local_batches, "an integer >= 0")
    if not is_distributed():
        return int(local_batches)
    bns = [m for m in _bns(model) if m.track_running_stats and m.running_mean is not None]
    total = all_reduce_sums({"n": int(local_batches)})["n"]
    if total == 0:
        raise DistributedError("BN calibration saw no batch on any rank")
    if not bns:
        return total
    dev = _collective_device()
    flat = torch.cat([torch.cat([m.running_mean.double().flatten(), m.running_var.double().flatten()])
                      for m in bns]).to(dev) * float(local_batches)
    torch.distributed.all_reduce(flat)
    flat = (flat / float(total)).cpu()
    offset = 0
    for m in bns:
        k = m.running_mean.numel()
        m.running_mean.copy_(flat[offset:offset + k].view_as(m.running_mean).to(m.running_mean))
        m.running_var.copy_(flat[offset + k:offset + 2 * k].view_as(m.running_var).to(m.running_var))
        offset += 2 * k
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(total)
    return total


def calibrate_bn_across_ranks(model: nn.Module, batches: Iterable, *, n_batches: int = 10,
                              **calibrate_kwargs: Any) -> int:
    """BN calibration over ``n_batches`` global batches split across ranks.

    Each rank runs :func:`flexsnn.training.bn_calibration.calibrate_bn` on its own
    ``batches`` (e.g. a loader over its :func:`shard_order`) for
    ``n_batches`` steps, then :func:`sync_bn_statistics` averages the statistics over every
    rank's batches. Alone it is ``calibrate_bn`` itself. Returns the total batch count.
    """
    from flexsnn.training.bn_calibration import calibrate_bn

    inner = unwrap_model(model)
    if not _bns(inner):
        return 0
    seen = calibrate_bn(inner, batches, n_batches=n_batches, **calibrate_kwargs)
    return sync_bn_statistics(inner, local_batches=seen)


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


# ------------------------------------------------------------------------------ trainer hooks
def _run_context_base() -> type:
    from flexsnn.training.trainer import RunContext

    return RunContext


class DistributedContext(_run_context_base()):  # type: ignore[misc]
    """The trainer's :class:`~flexsnn.training.trainer.RunContext` for a process group.

    - ``batch_size`` stays per process (PyTorch's DDP convention): the global batch is
      ``batch_size * world_size``. :meth:`shard` gives rank ``r`` the positions ``r, r + W,
      r + 2W, ...`` of the epoch's global order, trimmed to a multiple of ``W`` first (at most
      ``W - 1`` samples of the epoch's shuffled tail are skipped, as ``DistributedSampler``
      with ``drop_last=True`` does). Batch ``k`` of all ranks together is then exactly batch
      ``k`` of one process using ``batch_size * W`` on the same order, every rank runs the
      same number of steps, and every slice has the same size, so DDP's mean of the ranks'
      gradients is the gradient of the mean loss over the global batch.
    - :meth:`no_sync`: DDP's ``no_sync()`` for every configuration of a step but the last
      (MTT: ``s`` backward passes, one all-reduce); first checks that all ranks run the same
      temporal configuration (:func:`check_agreement`, one tiny all-reduce).
    - :meth:`all_reduce`: sums metric tensors over ranks.
    - :meth:`wrap_model`: :func:`wrap_model` (DDP).
    - :meth:`sync_bn`: BN calibration statistics averaged over every rank's batches.
    """

    def __init__(self, *, check_configs: bool = True, device: torch.device | str | None = None) -> None:
        if not is_distributed():
            raise DistributedError("DistributedContext needs an initialized process group with more than "
                                   "one process (use run_context_from_env())")
        self.rank = get_rank()
        self.world_size = get_world_size()
        self.check_configs = check_configs
        self.device = device
        self.passes = 0

    def shard(self, order: list[int]) -> list[int]:
        return shard_order(order, rank=self.rank, world_size=self.world_size)

    def no_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        if self.check_configs:
            config = getattr(unwrap_model(model), "temporal_config", None)
            check_agreement(config, what=f"the temporal configuration of forward/backward pass {self.passes}")
        self.passes += 1
        return sync_context(model, sync=last)

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        return all_reduce_tensor(values, op="sum")

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return wrap_model(model, device=self.device)

    def sync_bn(self, model: nn.Module, seen: int) -> int:
        """Average the BN statistics calibrated on each rank over all ranks' batches."""
        return sync_bn_statistics(model, local_batches=seen)


def run_context_from_env(*, device: str | torch.device | None = None, backend: str | None = None,
                         check_configs: bool = True):
    """The trainer's run context for this process: joins the torchrun process group when
    launched with ``WORLD_SIZE > 1`` (:func:`init_from_env`) and returns a
    :class:`DistributedContext`; otherwise the single-process ``RunContext``.

    ``device``: ``"auto"``/None (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """
    if device == "auto":
        device = None
    if not launched_distributed() and not is_distributed():
        return _run_context_base()()
    install_rank_zero_logging()
    info = init_from_env(device=device, backend=backend)
    return DistributedContext(check_configs=check_configs, device=info.device)


@contextlib.contextmanager
def training_session(*, device: str | torch.device | None = None, backend: str | None = None,
                     check_configs: bool = True) -> Iterator[Any]:
    """``with training_session(device=cfg.device) as context: train(..., context=context)``:
    :func:`run_context_from_env`, and leaving the process group on exit when it was joined
    here. Used by ``flexsnn train``; alone it yields the single-process ``RunContext``."""
    owned = launched_distributed() and not (torch.distributed.is_available()
                                            and torch.distributed.is_initialized())
    context = run_context_from_env(device=device, backend=backend, check_configs=check_configs)
    try:
        yield context
        if owned:
            barrier()  # rank 0 may still be writing; nobody leaves before it is done
    finally:
        if owned:
            destroy()


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
    procs = [ctx.Process(target=_spawn_entry, daemon=True,
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
    "DistInfo", "DistributedContext", "DistributedError", "ENV_VARS", "RankZeroFilter",
    "all_gather_objects", "all_reduce_sums", "all_reduce_tensor", "barrier", "broadcast_object",
    "calibrate_bn_across_ranks", "check_agreement", "describe", "destroy", "distributed_session",
    "env_world_size", "fingerprint", "free_port", "gather_objects", "get_local_rank", "get_rank",
    "get_world_size", "init_from_env", "init_process_group", "install_rank_zero_logging",
    "is_distributed", "is_main_process", "launched_distributed", "make_sampler", "on_main_process", "run_context_from_env", "set_epoch", "shard_indices", "shard_order", "sync_bn_statistics",
    "spawn_local", "sync_context", "training_session", "unwrap_model", "wrap_model",
]
