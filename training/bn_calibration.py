"""BatchNorm calibration after mixed time-step training, and the chip models' bias removal.

**Calibration** (seed §4.3.2, A.7): MTT changes the network's structure at every step, so the
running statistics gathered during training are wrong. After training, set every stage to
T_max, reset the running statistics, and re-estimate them as a cumulative average
(``momentum=None``) over ~10 training batches without gradients. The T_max statistics serve
every other T.

**Bias removal** (the paper's Speck pipeline): the chip has no BatchNorm and our chip neurons
take no bias, so a model trained with BN is turned into one without: zero every bias (BN's
``beta`` included) and every BN running mean, fold the remaining per-channel scale
``gamma / sqrt(running_var + eps)`` into the preceding convolution / linear weights, and
return a model without BN layers. Fine-tune it afterwards (MTT or SDT) with biases frozen.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError

log = logging.getLogger(__name__)

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batch_norm(model: nn.Module) -> bool:
    """True when ``model`` contains a BatchNorm layer."""
    return bool(batch_norms(model))


def reset_model_state(model: nn.Module) -> None:
    """Reset neuron state between samples (``model.reset()`` of a TFSNN, else every neuron)."""
    if hasattr(model, "reset") and callable(model.reset):
        model.reset()
        return
    from flexsnn.models.neurons import reset_neurons

    reset_neurons(model)


def _set_config(model: nn.Module, config: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """Apply ``config`` to a TFSNN and return the previous configuration (None if untouched)."""
    if config is None:
        return None
    previous = tuple(model.temporal_config) if hasattr(model, "temporal_config") else None
    if isinstance(config, int):
        model.set_uniform(config)
    else:
        model.set_temporal_config(tuple(int(t) for t in config))
    return previous


@torch.no_grad()
def calibrate_bn(
    model: nn.Module,
    batches: Iterable,
    *,
    config: int | Sequence[int] | None = None,
    n_batches: int = 10,
    device: torch.device | str | None = None,
    time_major: bool = False,
) -> int:
    """Re-estimate every BN layer's running statistics (in place) and return the batch count.

    Args:
        model: the network (a TFSNN or any module taking ``[T, B, ...]``).
        batches: iterable of ``(x, y)``; ``x`` float32 ``[B, T, C, H, W]`` as
            :func:`flexsnn.data.frames.frame_loader` yields (``[T, B, ...]`` with
            ``time_major=True``). ``y`` is ignored.
        config: temporal configuration to calibrate at (int = uniform T; e.g. T_max). The
            model's previous configuration is restored afterwards.
        n_batches: batches to average over (the paper uses 10).
        device: where to run (default: the model's parameters' device).

    Statistics: running stats are reset, ``momentum=None`` makes them the cumulative
    (equal-weight) average of the per-batch statistics; momentum and train/eval flags are
    restored afterwards. Gradients are never computed.
    """
    if n_batches < 1:
        raise ConfigError("n_batches", n_batches, "an integer >= 1")
    bns = batch_norms(model)
    if not bns:
        log.info("calibrate_bn: model has no BatchNorm layers; nothing to do")
        return 0
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    previous = _set_config(model, config)
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        seen = 0
        for x, _ in batches:
            if seen >= n_batches:
                break
            x = x.to(device, non_blocking=True)
            if not time_major:
                x = x.transpose(0, 1).contiguous()
            reset_model_state(model)
            model(x)
            seen += 1
        reset_model_state(model)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, flag in flags.items():
            m.train(flag)
        if previous is not None:
            _set_config(model, previous)
    if seen == 0:
        raise ConfigError("batches", "empty", "at least one calibration batch")
    log.info("calibrate_bn: %d BN layers re-estimated over %d batches at %s", len(bns), seen, config)
    return seen


def _bn_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.modules.batchnorm._BatchNorm]]:
    """``(weight layer, BN)`` pairs: each BN must directly follow a conv/linear in its parent."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            prev = children[i - 1][1] if i > 0 else None
            if not isinstance(prev, WEIGHT_TYPES):
                where = f"{parent_name}.{name}" if parent_name else name
                raise ConfigError(f"model.{where}", type(child).__name__,
                                  "a BatchNorm directly after a Conv/Linear layer (to fold it)",
                                  "bias removal only folds conv->BN pairs")
            if prev.weight.shape[0] != child.num_features:
                raise ConfigError(f"model.{parent_name}.{name}.num_features", child.num_features,
                                  f"{prev.weight.shape[0]} (output channels of the preceding layer)")
            pairs.append((prev, child))
    return pairs


@torch.no_grad()
def fold_batch_norm(model: nn.Module, *, zero_biases: bool = True) -> nn.Module:
    """A copy of ``model`` with biases / BN means zeroed and BN scales folded into weights.

    In the copy each BN becomes an identity in eval mode (weight 1, running_var 1 - eps so
    that ``sqrt(var + eps) == 1``, mean 0, beta 0), so the copy computes the bias-free model
    in eval mode. The input is not modified.
    """
    reset_model_state(model)  # drop neuron state tensors (graph non-leaves cannot be copied)
    out = copy.deepcopy(model)
    if zero_biases:
        for name, p in out.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        for m in batch_norms(out):
            if m.running_mean is not None:
                m.running_mean.zero_()
    for layer, bn in _bn_pairs(out):
        var = bn.running_var if bn.running_var is not None else torch.ones_like(bn.weight)
        gamma = bn.weight if bn.affine else torch.ones_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.reshape(shape))
        if layer.bias is not None:
            layer.bias.mul_(scale)
        if bn.affine:
            bn.weight.fill_(1.0)
        if bn.running_var is not None:
            bn.running_var.fill_(1.0 - bn.eps)
    return out


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, WEIGHT_TYPES)]


@torch.no_grad()
def remove_biases(model: nn.Module, *, rebuild: Callable[[], nn.Module] | None = None) -> nn.Module:
    """The paper's bias-removal phase: a model WITHOUT BatchNorm computing what ``model``
    (eval mode) computes once biases and BN means are zeroed.

    Args:
        model: trained model with BN (not modified).
        rebuild: builds the BN-free architecture, e.g.
            ``lambda: build_model("speck3c1fc", batch_norm=False)``. Its conv/linear layers
            must match ``model``'s in order and shape; they receive the folded weights (their
            biases, if any, zero). Without ``rebuild``, BN layers of a copy are replaced by
            ``nn.Identity``.

    Raises:
        ConfigError: a BN not directly after a conv/linear layer, or a rebuilt model whose
            weight layers do not match.
    """
    folded = fold_batch_norm(model)
    if rebuild is None:
        _replace_bn_with_identity(folded)
        return folded
    target = rebuild()
    if has_batch_norm(target):
        raise ConfigError("rebuild", type(target).__name__, "a model without BatchNorm layers",
                          "pass batch_norm=False to the builder")
    src, dst = _weight_layers(folded), _weight_layers(target)
    if len(src) != len(dst):
        raise ConfigError("rebuild", f"{len(dst)} conv/linear layers", f"{len(src)} (as in the trained model)")
    for i, (a, b) in enumerate(zip(src, dst)):
        if a.weight.shape != b.weight.shape:
            raise ConfigError(f"rebuild.layer[{i}].weight", tuple(b.weight.shape), f"shape {tuple(a.weight.shape)}")
        b.weight.copy_(a.weight)
        if b.bias is not None:
            b.bias.zero_()
    for attr in ("temporal_config",):
        if hasattr(model, attr) and hasattr(target, "set_temporal_config"):
            target.set_temporal_config(tuple(getattr(model, attr)))
    target.train(model.training)
    return target


def _replace_bn_with_identity(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _replace_bn_with_identity(child)


def freeze_biases(model: nn.Module) -> list[str]:
    """Set ``requires_grad=False`` on every parameter named ``*bias``; return their names."""
    names = []
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.requires_grad_(False)
            names.append(name)
    return names
