"""Evaluation of a TFSNN at any uniform T or any per-stage temporal configuration.

Prediction = argmax over classes of the outputs summed over time (``logits.sum(0)``).
Event data at another T follow one of two protocols (:data:`T_PROTOCOLS`, ``FrameCache(protocol=)``):

- ``"rebin"`` (default): the whole recording is binned into as many frames as the input stage's
  T (``config[0]``; a uniform T uses T frames), so a model trained at T=10 is tested at T=3 on
  3-bin frames of the same recordings: every event is seen, each bin is longer. This is what a
  time-binned chip run at that T sees.
- ``"prefix"``: the recording is binned into the training T (``data_T``) and only the first T'
  frames are used (the MTT paper's code: it slices the first T' of its T frames), so a smaller
  T' sees only the start of the recording. T' > data_T is refused.

Frame datasets are cached per T inside one call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.progress import ProgressFactory, null_progress

log = logging.getLogger(__name__)

ConfigLike = int | Sequence[int]
#: how event data are turned into T' frames at evaluation (see the module docstring)
T_PROTOCOLS: tuple[str, ...] = ("rebin", "prefix")


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Class predictions ``[B]`` int64 from per-step outputs ``[T, B, K]`` (argmax of the sum)."""
    if logits.dim() != 3:
        raise ConfigError("logits", tuple(logits.shape), "[T, B, K]")
    return logits.sum(0).argmax(-1)


def _apply(model: nn.Module, config: ConfigLike | None) -> None:
    if config is None:
        return
    if isinstance(config, int):
        model.set_uniform(int(config))
    else:
        model.set_temporal_config(tuple(int(t) for t in config))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, *, config: ConfigLike | None = None,
             device: torch.device | str | None = None, progress: ProgressFactory | None = None,
             desc: str = "eval", total: int | None = None) -> float:
    """Accuracy (fraction) of ``model`` in eval mode on ``(x [B, T, C, H, W], y [B])`` batches.

    ``config``: uniform T (int) or per-stage tuple applied before running (left applied).
    """
    device = torch.device(device) if device is not None else _device_of(model)
    _apply(model, config)
    was_training = model.training
    model.eval()
    bar = (progress or null_progress)(total=total, desc=desc)
    correct = n = 0
    try:
        for x, y in batches:
            x = x.to(device).transpose(0, 1).contiguous()
            y = y.to(device)
            pred = predict(model(x).float())
            correct += int((pred == y).sum())
            n += int(y.numel())
            bar.update(1)
            bar.set_postfix(acc=f"{correct / max(n, 1):.4f}")
    finally:
        bar.close()
        model.train(was_training)
    if n == 0:
        raise ConfigError("dataset", "empty", "at least one sample to evaluate")
    return correct / n


class FrameCache:
    """Frames of an event dataset at any T, built on demand and cached per T.

    Args:
        event_dataset: a sequence of ``(events, label)`` (see :mod:`flexsnn.data.registry`).
        protocol: ``"rebin"`` (whole recording into T frames) or ``"prefix"`` (the first T of
            ``data_T`` frames; the MTT paper's code).
        data_T: frames per recording under ``"prefix"`` (the training T); required there.
    """

    def __init__(self, event_dataset: Any, *, protocol: str = "rebin", data_T: int | None = None) -> None:
        if protocol not in T_PROTOCOLS:
            raise ConfigError("t_protocol", protocol, "one of " + ", ".join(T_PROTOCOLS),
                              hint="rebin bins the whole recording into T frames; prefix keeps the first T "
                                   "of the training T frames")
        from flexsnn.data.images import ImageDataset

        if isinstance(event_dataset, ImageDataset):
            protocol = "rebin"  # one direct-encoded frame per image: both protocols are the same
        if protocol == "prefix" and (data_T is None or int(data_T) < 1):
            raise ConfigError("data_T", data_T, "the training T (>= 1) for the prefix protocol")
        self.events = event_dataset
        self.protocol = protocol
        self.data_T = None if data_T is None else int(data_T)
        self._by_T: dict[int, Any] = {}

    def get(self, T: int):
        """The dataset of ``(x [T, C, H, W], y)`` at ``T`` under this cache's protocol."""
        from flexsnn.data.frames import FrameDataset, PrefixFrames
        from flexsnn.data.images import frames_for

        T = int(T)
        if self.protocol == "prefix":
            if T > self.data_T:
                raise ConfigError("T", T, f"<= {self.data_T} (the recordings' {self.data_T} frames) under the "
                                  "prefix protocol", hint="use --t-protocol rebin to evaluate above the training T")
            if self.data_T not in self._by_T:
                self._by_T[self.data_T] = FrameDataset(self.events, T=self.data_T)
            return PrefixFrames(self._by_T[self.data_T], T)
        if T not in self._by_T:
            self._by_T[T] = frames_for(self.events, T)  # static images: direct encoding
        return self._by_T[T]

    def loader(self, T: int, batch_size: int):
        """Unshuffled DataLoader of ``(x [B, T, C, H, W], y [B])`` at ``T``."""
        from torch.utils.data import DataLoader

        from flexsnn.data.frames import frame_loader

        if self.protocol == "prefix":
            if batch_size < 1:
                raise ConfigError("batch_size", batch_size, "an integer >= 1")
            return DataLoader(self.get(T), batch_size=batch_size, shuffle=False)
        return frame_loader(self.get(T), T=int(T), batch_size=batch_size, shuffle=False)


def _as_cache(data: Any) -> FrameCache:
    return data if isinstance(data, FrameCache) else FrameCache(data)


def accuracy_per_T(model: nn.Module, event_dataset: Any, T_list: Sequence[int], *, batch_size: int = 64,
                   progress: ProgressFactory | None = None) -> dict[int, float]:
    """``{T: accuracy}`` with every stage at T and the data binned into T frames."""
    cache = _as_cache(event_dataset)
    out: dict[int, float] = {}
    for T in T_list:
        loader = cache.loader(int(T), batch_size)
        out[int(T)] = accuracy(model, loader, config=int(T), progress=progress, desc=f"eval T={T}",
                               total=len(loader))
        log.info("accuracy at T=%d: %.4f", T, out[int(T)])
    return out


def accuracy_per_config(model: nn.Module, event_dataset: Any, configs: Sequence[Sequence[int]], *,
                        batch_size: int = 64, progress: ProgressFactory | None = None) -> list[float]:
    """Accuracy of each temporal configuration (data binned into ``config[0]`` frames)."""
    cache = _as_cache(event_dataset)
    out = []
    for cfg in configs:
        cfg = tuple(int(t) for t in cfg)
        loader = cache.loader(cfg[0], batch_size)
        out.append(accuracy(model, loader, config=cfg, progress=progress, desc=f"eval {cfg}", total=len(loader)))
    return out


@torch.no_grad()
def firing_rates(model: nn.Module, event_dataset: Any, config: ConfigLike, *, batch_size: int = 64,
                 n_batches: int = 4) -> list[float]:
    """Per-stage firing rate R_i (spikes per neuron per step) at ``config`` (e.g. T_max),
    over the first ``n_batches`` batches, in stage order."""
    cache = _as_cache(event_dataset)
    cfg = (int(config),) * model.num_stages if isinstance(config, int) else tuple(config)
    loader = cache.loader(cfg[0], batch_size)
    _apply(model, cfg)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    try:
        with model.record_rates() as rec:
            for i, (x, _) in enumerate(loader):
                if i >= n_batches:
                    break
                model(x.to(device).transpose(0, 1).contiguous())
    finally:
        model.train(was_training)
    rates = rec.rates
    return [float(rates[name]) for name in model.stage_names]


def format_table(curves: Mapping[str, Mapping[int, float]]) -> str:
    """A text table: one row per T, one column per curve (accuracy in %)."""
    names = list(curves)
    Ts = sorted({int(t) for c in curves.values() for t in c})
    width = {n: max(10, len(n) + 2) for n in names}
    head = "T".rjust(4) + "".join(n.rjust(width[n]) for n in names)
    rows = [head]
    for T in Ts:
        cells = "".join((f"{100 * curves[n][T]:.2f}%".rjust(width[n]) if T in curves[n] else " " * width[n])
                        for n in names)
        rows.append(str(T).rjust(4) + cells)
    return "\n".join(rows)


def plot_accuracy_curves(curves: Mapping[str, Mapping[int, float]], path: str | Path, *,
                         title: str = "accuracy vs inference T") -> Path:
    """Write a PNG with one accuracy-vs-T line per curve (e.g. ``{"sdt": ..., "mtt": ...}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexsnn.io_utils import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, curve in curves.items():
        Ts = sorted(curve)
        ax.plot(Ts, [100 * curve[t] for t in Ts], marker="o", label=name)
    ax.set_xlabel("inference T (uniform)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
