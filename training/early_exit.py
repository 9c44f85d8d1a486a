"""Early-exit inference for a TFSNN (SEENN-I, seed paper §5.2 / Table 5).

What "one time step at a time" means here
-----------------------------------------
Early exit runs the model at a *uniform* ``T_max`` (every stage at ``T_max``), one step per
call, and may stop after any step ``t <= T_max``. At a uniform T every TTM is the identity and
every layer is causal (stateless layers act on each step alone, neurons only look back), so
step ``t`` of the streamed run equals step ``t`` of one full forward at ``T_max``. The
streamed run sets every stage to ``T = 1`` (:meth:`TFSNN.set_uniform`) and calls
``model(x[t:t+1], reset=False)`` so that the neuron states carry over from step to step
(:func:`stream_logits`). Stopping at ``t`` therefore means "the first ``t`` of the ``T_max``
input frames were seen", i.e. the first ``t/T_max`` of an event recording binned into
``T_max`` frames, or ``t`` repetitions of a static image. (Running the TFSNN at ``T = t``
with the recording re-binned into ``t`` frames is a different question, answered by
evaluation per T.) Mixed temporal configurations are not causal (a downsampling TTM sums
future frames) and are refused.

Decision rule (SEENN-I): keep the cumulative mean of the per-step logits
``Ō_t = (1/t) Σ_{i<=t} O_i``; exit at the first ``t`` with ``max softmax(Ō_t) >= threshold``,
else at ``T_max``; the prediction is ``argmax Ō_t`` at the exit step. Threshold 0 exits at
``t = 1``; a threshold above 1 never exits early and equals full evaluation (mean of all
``T_max`` steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from flexsnn.errors import ConfigError
from flexsnn.progress import ProgressFactory, null_progress

__all__ = [
    "EarlyExitPoint",
    "step_inputs",
    "stream_logits",
    "cumulative_mean",
    "exit_steps",
    "early_exit_predict",
    "collect_cumulative_logits",
    "early_exit_sweep",
]


@dataclass(frozen=True)
class EarlyExitPoint:
    """Result of early exit at one confidence threshold over a dataset.

    Attributes:
        threshold: the confidence threshold on the top softmax probability.
        accuracy: fraction of samples whose prediction at the exit step is right.
        mean_T: mean exit step (time steps run per sample), in ``[1, T_max]``.
        T_max: the largest number of steps.
        n: samples.
        exit_histogram: ``exit_histogram[t-1]`` = samples that exited at step ``t``.
    """

    threshold: float
    accuracy: float
    mean_T: float
    T_max: int
    n: int
    exit_histogram: tuple[int, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exit_histogram"] = list(self.exit_histogram)
        return d


def _check_uniform(model: torch.nn.Module) -> None:
    config = tuple(getattr(model, "temporal_config", ()))
    if config and len(set(config)) != 1:
        raise ConfigError("temporal_config", config, "a uniform configuration for early exit",
                          "call model.set_uniform(T_max) first; mixed configurations are not causal "
                          "(a downsampling TTM sums future frames)")


def step_inputs(x: torch.Tensor, T_max: int) -> torch.Tensor:
    """The ``T_max`` per-step input frames of ``x``.

    Args:
        x: ``[T_in, B, ...]`` float: ``T_in == T_max`` frames (event data binned at ``T_max``,
            or a sequence), or ``T_in == 1`` (a static image, repeated every step).
        T_max: steps to run.

    Returns:
        ``[T_max, B, ...]`` (a view when ``T_in == 1``).

    Raises:
        ConfigError: any other ``T_in``.
    """
    if T_max < 1:
        raise ConfigError("T_max", T_max, "an integer >= 1")
    if x.shape[0] == T_max:
        return x
    if x.shape[0] == 1:
        return x.expand(T_max, *x.shape[1:])
    raise ConfigError("input T", int(x.shape[0]), f"{T_max} frames (T_max) or 1 (static input)",
                      "bin the events into T_max frames: early exit consumes one frame per step")


@torch.no_grad()
def stream_logits(model: torch.nn.Module, x: torch.Tensor, *, T_max: Optional[int] = None,
                  stop_after: Optional[int] = None) -> torch.Tensor:
    """Run ``model`` one time step at a time, keeping neuron state between steps.

    Args:
        model: a TFSNN (any module with ``set_uniform``, ``reset`` and
            ``forward(x, reset=...)``); its temporal configuration is restored afterwards.
        x: input ``[T_in, B, ...]`` (see :func:`step_inputs`).
        T_max: steps (default ``x.shape[0]``).
        stop_after: run only the first ``stop_after`` steps.

    Returns:
        per-step logits ``[t_run, B, K]`` float, ``t_run = min(T_max, stop_after)``; equal to
        the first ``t_run`` steps of ``model`` run at uniform ``T_max`` on the whole input.
    """
    T_max = int(x.shape[0] if T_max is None else T_max)
    frames = step_inputs(x, T_max)
    n = T_max if stop_after is None else max(1, min(T_max, int(stop_after)))
    saved = tuple(model.temporal_config)
    model.set_uniform(1)
    try:
        model.reset()
        outs = [model(frames[t:t + 1], reset=False) for t in range(n)]
    finally:
        model.set_temporal_config(saved)
        model.reset()
    return torch.cat(outs, 0)


def cumulative_mean(logits: torch.Tensor) -> torch.Tensor:
    """``[T, B, K] -> [T, B, K]``: entry ``t`` is the mean of steps ``0..t``."""
    steps = torch.arange(1, logits.shape[0] + 1, dtype=logits.dtype, device=logits.device)
    return logits.cumsum(0) / steps.view(-1, *([1] * (logits.dim() - 1)))


def exit_steps(cum_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Exit step of each sample (1-based, int64 ``[B]``) from cumulative-mean logits ``[T, B, K]``:
    the first ``t`` whose top softmax probability is ``>= threshold``, else ``T``."""
    conf = torch.softmax(cum_logits.float(), dim=-1).amax(-1)  # [T, B]
    hit = conf >= float(threshold)
    T = cum_logits.shape[0]
    first = torch.where(hit.any(0), hit.to(torch.int64).argmax(0), torch.full_like(hit[0], T - 1, dtype=torch.int64))
    return first + 1


@torch.no_grad()
def early_exit_predict(model: torch.nn.Module, x: torch.Tensor, threshold: float, *,
                       T_max: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Early-exit inference on one batch, streamed: stops stepping once every sample exited.

    Args:
        model: a TFSNN at a uniform configuration.
        x: ``[T_in, B, ...]`` (``T_in`` = ``T_max`` frames or 1 static frame).
        threshold: confidence threshold on the top softmax probability of the cumulative mean.
        T_max: most steps (default ``x.shape[0]``).

    Returns:
        ``(predictions int64 [B], exit_step int64 [B])`` with exit steps in ``[1, T_max]``.
    """
    _check_uniform(model)
    T_max = int(x.shape[0] if T_max is None else T_max)
    frames = step_inputs(x, T_max)
    B = frames.shape[1]
    saved = tuple(model.temporal_config)
    model.set_uniform(1)
    pred = torch.zeros(B, dtype=torch.int64)
    exit_t = torch.zeros(B, dtype=torch.int64)
    done = torch.zeros(B, dtype=torch.bool)
    try:
        model.reset()
        total = None
        for t in range(1, T_max + 1):
            out = model(frames[t - 1:t], reset=False)[-1].float()  # [B, K]
            total = out if total is None else total + out
            mean = total / t
            conf, cls = torch.softmax(mean, -1).max(-1)
            new = (~done) & ((conf.cpu() >= float(threshold)) | (t == T_max))
            pred[new] = cls.cpu()[new]
            exit_t[new] = t
            done |= new
            if bool(done.all()):
                break
    finally:
        model.set_temporal_config(saved)
        model.reset()
    return pred, exit_t


@torch.no_grad()
def collect_cumulative_logits(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                              *, T_max: int, time_major: bool = False,
                              device: torch.device | str = "cpu",
                              progress: Optional[ProgressFactory] = None,
                              total: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative-mean logits of every sample at every step, for a threshold sweep.

    One full forward at uniform ``T_max`` per batch (equal to the streamed run, see the module
    docstring); every threshold is then a cheap decision on these logits.

    Args:
        model: a TFSNN; run at uniform ``T_max`` in eval mode (its configuration is restored).
        batches: ``(x, y)`` pairs; ``x`` ``[B, T_in, ...]`` (loader layout) or ``[T_in, B, ...]``
            with ``time_major=True``; ``y`` int64 ``[B]``.
        T_max: steps.
        device: where to run.
        progress: progress factory (one update per batch); ``total`` its length.

    Returns:
        ``(cum_logits float32 [T_max, N, K] on CPU, labels int64 [N])``.
    """
    saved = tuple(model.temporal_config)
    was_training = model.training
    model.eval()
    model.set_uniform(int(T_max))
    bar = (progress or null_progress)(total=total, desc="early-exit logits")
    cums, labels = [], []
    try:
        for x, y in batches:
            x = x if time_major else x.transpose(0, 1)
            x = step_inputs(x.to(device), int(T_max))
            cums.append(cumulative_mean(model(x).float()).cpu())
            labels.append(torch.as_tensor(y).cpu())
            bar.update(1)
    finally:
        bar.close()
        model.set_temporal_config(saved)
        model.reset()
        model.train(was_training)
    if not cums:
        raise ConfigError("batches", "empty", "at least one batch")
    return torch.cat(cums, 1), torch.cat(labels)


def early_exit_sweep(cum_logits: torch.Tensor, labels: torch.Tensor,
                     thresholds: Sequence[float]) -> list[EarlyExitPoint]:
    """Accuracy and mean exit step for every threshold.

    Args:
        cum_logits: ``[T_max, N, K]`` from :func:`collect_cumulative_logits`.
        labels: int64 ``[N]``.
        thresholds: confidence thresholds (any real numbers; 0 exits at t = 1, > 1 never early).

    Returns:
        one :class:`EarlyExitPoint` per threshold, in the given order.
    """
    T_max, N = cum_logits.shape[0], cum_logits.shape[1]
    preds_all = cum_logits.argmax(-1)  # [T, N]
    labels = torch.as_tensor(labels).to(torch.int64)
    points = []
    for th in thresholds:
        t_exit = exit_steps(cum_logits, float(th))
        pred = preds_all.gather(0, (t_exit - 1).view(1, -1)).squeeze(0)
        hist = np.bincount(t_exit.numpy() - 1, minlength=T_max)
        points.append(EarlyExitPoint(
            threshold=float(th), accuracy=float((pred == labels).double().mean()) if N else 0.0,
            mean_T=float(t_exit.double().mean()) if N else 0.0, T_max=int(T_max), n=int(N),
            exit_histogram=tuple(int(v) for v in hist)))
    return points
