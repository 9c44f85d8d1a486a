"""Robustness and generalization metrics (seed paper §5.3 Fig. 5/6, A.11 Table 13).

- :func:`noise_sweep`: accuracy when Gaussian noise ``N(0, sigma^2)`` is added to the weights
  (every Conv/Linear weight tensor; BN and biases untouched) or, separately, to the input
  frames, for each sigma of a sweep, ``repeats`` times each (mean, min, max). sigma = 0
  reproduces the clean accuracy exactly. ``scale="relative"`` multiplies sigma by each weight
  tensor's standard deviation (comparable across layers); the paper's setting is absolute.
  ``axis="variance"`` takes the sweep values as variances ``sigma^2`` (the paper's Fig. 5/6
  axis) and draws with ``sigma = sqrt(value)``; every curve reports both.
- :func:`gradient_norms`: ``||dL/dW||``, the norm of the gradient of the mean loss over the
  whole given set (the training set in the paper) w.r.t. the conv layers' weights, and the
  mean over samples of ``||dL_i/dx_i||``, the per-sample loss gradient w.r.t. the input frames.

All randomness comes from ``seed`` (one stream per kind, sigma and repeat); the model is never
left modified (weights are restored, its configuration and train/eval mode are restored).
Inputs are loader batches ``(x [B, T, ...], y [B])``; the model runs at uniform ``T`` (the
frames' T) unless ``T`` says otherwise.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.progress import ProgressFactory, null_progress
from flexsnn.seeding import numpy_rng

__all__ = [
    "NOISE_KINDS",
    "NoiseCurve",
    "GradientNorms",
    "noisy_weight_layers",
    "perturbed_weights",
    "add_input_noise",
    "batch_accuracy",
    "noise_sweep",
    "gradient_norms",
]

NOISE_KINDS = ("weight", "input")
NOISE_SCALES = ("absolute", "relative")
NOISE_AXES = ("sigma", "variance")
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class NoiseCurve:
    """Accuracy under noise over a sigma sweep.

    Attributes:
        kind: ``"weight"`` or ``"input"``.
        sigma: noise standard deviations (absolute, or relative to each weight tensor's std).
        accuracy: ``accuracy[i][r]``, fraction correct at ``sigma[i]``, repeat ``r``.
        clean: accuracy without noise.
        scale: ``"absolute"`` or ``"relative"``.
        axis: the sweep's own axis, ``"sigma"`` or ``"variance"`` (``sigma^2``, the paper's).
    """

    kind: str
    sigma: tuple[float, ...]
    accuracy: tuple[tuple[float, ...], ...]
    clean: float
    scale: str = "absolute"
    axis: str = "sigma"

    @property
    def variance(self) -> list[float]:
        """The noise variances ``sigma^2``."""
        return [float(s) ** 2 for s in self.sigma]

    @property
    def mean(self) -> list[float]:
        return [float(np.mean(a)) for a in self.accuracy]

    @property
    def min(self) -> list[float]:
        return [float(np.min(a)) for a in self.accuracy]

    @property
    def max(self) -> list[float]:
        return [float(np.max(a)) for a in self.accuracy]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "scale": self.scale, "axis": self.axis, "sigma": list(self.sigma),
                "variance": self.variance, "clean": self.clean,
                "mean": self.mean, "min": self.min, "max": self.max,
                "accuracy": [list(a) for a in self.accuracy]}


@dataclass(frozen=True)
class GradientNorms:
    """Gradient statistics (A.11).

    Attributes:
        grad_norm_w: ``||dL/dW||`` over the selected layers' weights, L = mean loss over the set.
        grad_norm_x: mean over samples of ``||dL_i/dx_i||`` (input frames ``[T, C, H, W]``).
        per_layer: layer name -> its own ``||dL/dW||``.
        n: samples.
        layers: ``"conv"`` or ``"all"`` (conv and linear).
    """

    grad_norm_w: float
    grad_norm_x: float
    per_layer: dict[str, float] = field(default_factory=dict)
    n: int = 0
    layers: str = "conv"

    def to_dict(self) -> dict:
        return asdict(self)


def noisy_weight_layers(model: nn.Module, layers: str = "all") -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers whose ``weight`` gets noise / gradient norms:
    ``"conv"`` = ``nn.Conv*d``; ``"all"`` = conv and ``nn.Linear``."""
    if layers not in ("conv", "all"):
        raise ConfigError("layers", layers, "'conv' or 'all'")
    kinds: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if layers == "all":
        kinds = kinds + (nn.Linear,)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and getattr(m, "weight", None) is not None]


def _generator(seed: int, *stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(numpy_rng(seed, *stream).integers(0, 2**62)))


@contextlib.contextmanager
def perturbed_weights(model: nn.Module, sigma: float, generator: torch.Generator, *,
                      scale: str = "absolute", layers: str = "all") -> Iterator[nn.Module]:
    """Add ``N(0, sigma^2)`` to every selected weight tensor in place; restore on exit.

    ``scale="relative"``: the noise of each tensor is ``sigma * std(W)``.
    """
    if scale not in NOISE_SCALES:
        raise ConfigError("scale", scale, f"one of {NOISE_SCALES}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError("sigma", sigma, "a finite number >= 0")
    saved = []
    try:
        with torch.no_grad():
            for _, m in noisy_weight_layers(model, layers):
                w = m.weight
                saved.append((w, w.detach().clone()))
                s = float(sigma) * (float(w.std()) if scale == "relative" and w.numel() > 1 else 1.0)
                noise = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device, w.dtype)
                w.add_(noise * s)
        yield model
    finally:
        with torch.no_grad():
            for w, original in saved:
                w.copy_(original)


def add_input_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``x + N(0, sigma^2)`` (new tensor, same shape and dtype; ``x`` is not modified)."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError("sigma", sigma, "a finite number >= 0")
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return x + noise * float(sigma)


@contextlib.contextmanager
def _eval_at(model: nn.Module, T: Optional[int]) -> Iterator[None]:
    saved = tuple(getattr(model, "temporal_config", ()))
    was_training = model.training
    model.eval()
    if T is not None:
        model.set_uniform(int(T))
    try:
        yield
    finally:
        if saved:
            model.set_temporal_config(saved)
        if hasattr(model, "reset"):
            model.reset()
        model.train(was_training)


def _time_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1)


@torch.no_grad()
def batch_accuracy(model: nn.Module, batches: Sequence[Batch], *,
                   transform: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
                   device: torch.device | str = "cpu") -> float:
    """Fraction correct (argmax of the time-mean logits) over loader batches ``(x [B,T,...], y)``.
    ``transform(x_time_major, batch_index)`` may perturb each input first."""
    correct, total = 0, 0
    for i, (x, y) in enumerate(batches):
        x = _time_major(x.to(device))
        if transform is not None:
            x = transform(x, i)
        logits = model(x)
        correct += int((logits.mean(0).argmax(-1).cpu() == y).sum())
        total += int(y.numel())
    return correct / total if total else 0.0


def noise_sweep(model: nn.Module, batches: Iterable[Batch], sigmas: Sequence[float], *, kind: str = "weight",
                repeats: int = 5, seed: int = 0, scale: str = "absolute", layers: str = "all",
                T: Optional[int] = None, device: torch.device | str = "cpu",
                progress: Optional[ProgressFactory] = None, axis: str = "sigma") -> NoiseCurve:
    """Accuracy of ``model`` under weight or input noise, ``repeats`` draws per sigma.

    Args:
        model: a TFSNN (run at uniform ``T`` if given, else its current configuration).
        batches: loader batches ``(x [B, T, ...], y [B])`` (materialized once, reused by every draw).
        sigmas: noise standard deviations, >= 0.
        kind: ``"weight"`` or ``"input"``.
        repeats: draws per sigma (the paper: 5).
        seed: seed of every draw (stream ``(kind, sigma index, repeat)``).
        scale: weight noise ``"absolute"`` or ``"relative"`` to each tensor's std (input noise is absolute).
        layers: weight layers with noise: ``"all"`` (conv + linear) or ``"conv"``.
        axis: ``"sigma"`` (``sigmas`` are standard deviations) or ``"variance"`` (they are
            ``sigma^2``, the paper's axis; each draw uses ``sqrt``).

    Returns:
        :class:`NoiseCurve`.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError("kind", kind, f"one of {NOISE_KINDS}")
    if axis not in NOISE_AXES:
        raise ConfigError("axis", axis, f"one of {NOISE_AXES}", hint="variance = the paper's sigma^2 axis")
    if axis == "variance":
        if any(not (float(v) >= 0 and math.isfinite(float(v))) for v in sigmas):
            raise ConfigError("variances", list(sigmas), "finite numbers >= 0")
        sigmas = [math.sqrt(float(v)) for v in sigmas]
    if repeats < 1:
        raise ConfigError("repeats", repeats, "an integer >= 1")
    batches = list(batches)
    kind_id = NOISE_KINDS.index(kind)
    bar = (progress or null_progress)(total=len(sigmas) * repeats + 1, desc=f"{kind} noise")
    rows = []
    try:
        with _eval_at(model, T):
            clean = batch_accuracy(model, batches, device=device)
            bar.update(1)
            for i, sigma in enumerate(sigmas):
                accs = []
                for r in range(repeats):
                    if float(sigma) == 0.0:  # zero noise: exactly the clean model / input
                        accs.append(clean)
                    elif kind == "weight":
                        with perturbed_weights(model, float(sigma), _generator(seed, kind_id, i, r),
                                               scale=scale, layers=layers):
                            accs.append(batch_accuracy(model, batches, device=device))
                    else:
                        def transform(x: torch.Tensor, b: int, _s=float(sigma), _i=i, _r=r) -> torch.Tensor:
                            return add_input_noise(x, _s, _generator(seed, kind_id, _i, _r, b))
                        accs.append(batch_accuracy(model, batches, transform=transform, device=device))
                    bar.update(1)
                rows.append(tuple(accs))
    finally:
        bar.close()
    return NoiseCurve(kind=kind, sigma=tuple(float(s) for s in sigmas), accuracy=tuple(rows), clean=clean,
                      scale=scale if kind == "weight" else "absolute", axis=axis)


def gradient_norms(model: nn.Module, batches: Iterable[Batch], *, loss_fn: Optional[Callable] = None,
                   layers: str = "conv", T: Optional[int] = None, device: torch.device | str = "cpu",
                   progress: Optional[ProgressFactory] = None) -> GradientNorms:
    """``||dL/dW||`` (L = mean loss over all samples of ``batches``) and mean ``||dL_i/dx_i||``.

    Args:
        model: a TFSNN; run in eval mode (BN uses running statistics, so samples are independent).
        batches: loader batches ``(x [B, T, ...], y [B])``, e.g. the whole training set.
        loss_fn: ``(logits [T, B, K], y [B]) -> mean loss`` (default: mean-CE, ``build_loss("ce")``).
        layers: ``"conv"`` (the paper) or ``"all"`` (conv + linear; for nets without conv).
        T: run at uniform ``T`` (default: the model's current configuration).

    Raises:
        ConfigError: no layer of that kind in the model, or no samples.
    """
    if loss_fn is None:
        from flexsnn.training.losses import build_loss

        loss_fn = build_loss("ce")
    selected = noisy_weight_layers(model, layers)
    if not selected:
        raise ConfigError("layers", layers, "a kind of layer the model has", "use layers='all' for nets without conv")
    weights = [m.weight for _, m in selected]
    sums = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    x_norm_sum, n = 0.0, 0
    batches = list(batches)
    bar = (progress or null_progress)(total=len(batches), desc="gradients")
    requires = [p.requires_grad for p in model.parameters()]
    try:
        with _eval_at(model, T):
            for p in model.parameters():
                p.requires_grad_(False)
            for w in weights:
                w.requires_grad_(True)
            for x, y in batches:
                x = _time_major(x.to(device)).detach().requires_grad_(True)
                y = y.to(device)
                B = int(y.numel())
                loss = loss_fn(model(x), y) * B  # sum of per-sample losses
                grads = torch.autograd.grad(loss, [x, *weights])
                gx = grads[0].detach()
                x_norm_sum += float(gx.transpose(0, 1).reshape(B, -1).norm(dim=1).double().sum())
                for s, g in zip(sums, grads[1:]):
                    s.add_(g.detach().double())
                n += B
                bar.update(1)
    finally:
        bar.close()
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    if n == 0:
        raise ConfigError("batches", "empty", "at least one sample")
    per_layer = {name: float((s / n).norm()) for (name, _), s in zip(selected, sums)}
    total = float(torch.sqrt(sum(((s / n) ** 2).sum() for s in sums)))
    return GradientNorms(grad_norm_w=total, grad_norm_x=x_norm_sum / n, per_layer=per_layer, n=n, layers=layers)
