"""Multi-process training on PyTorch's own engine (``torch.distributed`` + DDP), with a no-op
path when the process runs alone.

Launch ``flexsnn train`` under ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init_from_env` joins the process
group (``gloo`` on CPU, ``nccl`` on CUDA). Without those variables (or with
``WORLD_SIZE=1``) every helper here is a cheap no-op: rank 0 of a world of 1, models are
not wrapped, reductions return their input. The process-group helpers themselves live in
:mod:`flexsnn.parallel` (shared with sharded evaluation) and are re-exported here.

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
import logging
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.parallel import (  # noqa: F401  (re-exported: one import for training code)
    DEFAULT_TIMEOUT_S,
    DistInfo,
    DistributedError,
    ENV_VARS,
    RankZeroFilter,
    all_gather_objects,
    all_reduce_sums,
    all_reduce_tensor,
    barrier,
    broadcast_object,
    check_agreement,
    describe,
    destroy,
    distributed_session,
    env_world_size,
    fingerprint,
    free_port,
    gather_objects,
    get_local_rank,
    get_rank,
    get_world_size,
    init_from_env,
    init_process_group,
    install_rank_zero_logging,
    is_distributed,
    is_main_process,
    launched_distributed,
    on_main_process,
    shard_indices,
    spawn_local,
)
from flexsnn import parallel as _parallel
from flexsnn.parallel import _collective_device
from flexsnn.training.trainer import RunContext  # the trainer's hooks (it does not import this module)

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------ trainer hooks
class DistributedContext(RunContext):
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
        return RunContext()
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


__all__ = sorted([*_parallel.__all__,
                  "DistributedContext",
                  "calibrate_bn_across_ranks",
                  "make_sampler",
                  "run_context_from_env",
                  "set_epoch",
                  "shard_order",
                  "sync_bn_statistics",
                  "sync_context",
                  "training_session",
                  "unwrap_model",
                  "wrap_model",
                  ])
