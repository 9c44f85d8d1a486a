"""Spiking neurons: one pure step function with injected strategies, and a thin module.

The two neurons flexsnn needs are one discrete-time update with different strategies
(sinabs/norse style):

=============  ==========  ==============  ===========  ===========  ==================
profile        decay       spike           reset        min_v_mem    surrogate (width)
=============  ==========  ==============  ===========  ===========  ==================
``paper-lif``  0.5         single (v>Vth)  hard         None         triangle (h = 1)
``speck-iaf``  1.0 (IAF)   multi           subtract     -1.0         single-exponential
                           floor(v/Vth)                              (0.5, as sinabs)
=============  ==========  ==============  ===========  ===========  ==================

Both have ``Vth = 1`` and no bias. One step (:func:`neuron_step`), all values in units of
the threshold's unit (dimensionless here)::

    v   = decay * u + x_t                # integrate
    s_t = spike(v)                       # forward: spike fn; backward: surrogate'(v)
    u'  = reset(v, s_t)                  # hard: v * (1 - s); subtract: v - s * Vth
    u'  = max(u', min_v_mem)             # written as relu(u' - m) + m, exactly as sinabs

``speck-iaf`` computes exactly what ``sinabs.layers.IAFSqueeze(min_v_mem=-1,
spike_fn=MultiSpike, reset_fn=MembraneSubtract())`` computes (tested bit for bit), which is
the neuron of the paper's Speck code and of the chip (up to discretization).

:class:`RecurrentSpikingNeuron` adds an all-to-all recurrent current ``W_rec s_{t-1}`` (and,
optionally, a learnable leak per neuron); the zoo's ``seqfc(recurrent=True)`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from flexsnn.errors import ConfigError, FlexsnnError
from flexsnn.models.surrogate import SURROGATES

SPIKE_MODES = ("single", "multi")
RESET_MODES = ("hard", "subtract")


class NeuronStateError(FlexsnnError, RuntimeError):
    """A neuron received input whose shape differs from its stored state without a reset.

    Attributes: ``neuron`` (repr), ``state_shape``, ``input_shape``.
    """

    def __init__(self, neuron: str, state_shape: tuple, input_shape: tuple) -> None:
        self.neuron, self.state_shape, self.input_shape = neuron, state_shape, input_shape
        super().__init__(
            f"{neuron}: input per step has shape {input_shape} but the stored state has shape "
            f"{state_shape}. Call reset() (model.reset() for a whole network) between samples "
            "so state never leaks from one batch into the next"
        )


@dataclass(frozen=True)
class NeuronConfig:
    """Parameters of a spiking neuron (immutable, validated).

    Attributes:
        profile: name of the profile it came from (``"paper-lif"``, ``"speck-iaf"``) or
            ``"custom"``.
        decay: membrane leak factor per step, in (0, 1]; 1.0 = integrate-and-fire.
        threshold: firing threshold ``Vth`` (> 0), same unit as the input current.
        reset: ``"hard"`` (``u = v * (1 - s)``; needs ``spike="single"``) or ``"subtract"``
            (``u = v - s * Vth``).
        spike: ``"single"`` (``s = 1[v > Vth]``) or ``"multi"`` (``s = floor(v / Vth)`` for
            ``v > 0``, else 0; sinabs ``MultiSpike``).
        min_v_mem: lower bound of the membrane potential after reset, or ``None``.
        surrogate: key of :data:`flexsnn.models.surrogate.SURROGATES`.
        surrogate_width: width of the surrogate (triangle: ``h``; single-exponential:
            relative width, sinabs' ``grad_width``).
    """

    profile: str = "custom"
    decay: float = 0.5
    threshold: float = 1.0
    reset: str = "hard"
    spike: str = "single"
    min_v_mem: Optional[float] = None
    surrogate: str = "triangle"
    surrogate_width: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.decay) <= 1.0:
            raise ConfigError("neuron.decay", self.decay, "a leak factor in (0, 1]", "1.0 is an IAF neuron")
        if not float(self.threshold) > 0.0:
            raise ConfigError("neuron.threshold", self.threshold, "a positive number")
        if self.reset not in RESET_MODES:
            raise ConfigError("neuron.reset", self.reset, f"one of {RESET_MODES}")
        if self.spike not in SPIKE_MODES:
            raise ConfigError("neuron.spike", self.spike, f"one of {SPIKE_MODES}")
        if self.reset == "hard" and self.spike == "multi":
            raise ConfigError("neuron.reset", self.reset, "'subtract' when spike='multi'",
                              "a hard reset u = v*(1-s) is only defined for single spikes")
        if self.min_v_mem is not None and not float(self.min_v_mem) < float(self.threshold):
            raise ConfigError("neuron.min_v_mem", self.min_v_mem, f"None or below the threshold {self.threshold}")
        if self.surrogate not in SURROGATES:
            raise ConfigError("neuron.surrogate", self.surrogate, f"one of {sorted(SURROGATES)}")
        if not float(self.surrogate_width) > 0.0:
            raise ConfigError("neuron.surrogate_width", self.surrogate_width, "a positive number")


PROFILES: dict[str, NeuronConfig] = {
    "paper-lif": NeuronConfig(
        profile="paper-lif", decay=0.5, threshold=1.0, reset="hard", spike="single",
        min_v_mem=None, surrogate="triangle", surrogate_width=1.0,
    ),
    "speck-iaf": NeuronConfig(
        profile="speck-iaf", decay=1.0, threshold=1.0, reset="subtract", spike="multi",
        min_v_mem=-1.0, surrogate="single-exponential", surrogate_width=0.5,
    ),
}


def neuron_config(profile: str, **overrides) -> NeuronConfig:
    """The :class:`NeuronConfig` of a named profile, with fields overridden.

    Raises:
        ConfigError: unknown profile, unknown field, or an invalid value.
    """
    if profile not in PROFILES:
        raise ConfigError("neuron.profile", profile, f"one of {sorted(PROFILES)}")
    known = set(NeuronConfig.__dataclass_fields__) - {"profile"}
    for key in overrides:
        if key not in known:
            raise ConfigError(f"neuron.{key}", overrides[key], f"a field of NeuronConfig: {sorted(known)}")
    return replace(PROFILES[profile], **overrides)


# --------------------------------------------------------------------------- strategies
def spike_single(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1[v > Vth]`` as float (the MTT paper's Heaviside, strict inequality)."""
    return (v > threshold).to(v.dtype)


def spike_multi(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """``floor(v / Vth)`` for ``v > 0``, else 0 (sinabs ``MultiSpike``, same arithmetic)."""
    return ((v > 0) * torch.div(v, threshold, rounding_mode="trunc")).to(v.dtype)


def reset_hard(v: torch.Tensor, s: torch.Tensor, threshold: float) -> torch.Tensor:
    """``u = v * (1 - s)`` (MTT paper eq. 4; the gradient flows through ``s``)."""
    return v * (1.0 - s)


def reset_subtract(v: torch.Tensor, s: torch.Tensor, threshold: float) -> torch.Tensor:
    """``u = v - s * Vth`` (sinabs ``MembraneSubtract``; the chip's reset)."""
    return v - s * threshold


SPIKE_FNS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "single": spike_single, "multi": spike_multi,
}
RESET_FNS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "hard": reset_hard, "subtract": reset_subtract,
}


def surrogate_grad(v: torch.Tensor, config: NeuronConfig) -> torch.Tensor:
    """The surrogate ``ds/dv`` at membrane potential ``v`` (after integration, before reset).

    Shape and dtype of ``v``; used by :class:`SpikeFunction`'s backward and by rate-based
    backprop (eligibility traces).
    """
    return SURROGATES[config.surrogate](v, float(config.threshold), float(config.surrogate_width))


class SpikeFunction(torch.autograd.Function):
    """Spikes of ``config.spike`` forward; ``grad * surrogate_grad(v, config)`` backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, config: NeuronConfig) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.config = config
        return SPIKE_FNS[config.spike](v, float(config.threshold))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad_output * surrogate_grad(v, ctx.config), None


def spike(v: torch.Tensor, config: NeuronConfig) -> torch.Tensor:
    """Spike function with surrogate gradient (see :class:`SpikeFunction`)."""
    return SpikeFunction.apply(v, config)


def neuron_step(x_t: torch.Tensor, v: torch.Tensor, config: NeuronConfig,
                decay: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step of a neuron; pure (never writes to its arguments).

    Args:
        x_t: input current at step t, ``[B, ...]`` float (threshold units).
        v: membrane potential after the previous step's reset, same shape (zeros at t = 0).
        config: neuron parameters.
        decay: per-neuron leak factors (broadcast against ``v``, e.g. ``[features]``) used
            instead of ``config.decay``; None uses ``config.decay``.

    Returns:
        ``(s_t, v_next)``: spikes ``[B, ...]`` float (0/1, or counts for ``spike="multi"``) and
        the membrane potential after reset (and the ``min_v_mem`` clamp).
    """
    v_int = v * (config.decay if decay is None else decay) + x_t
    s_t = spike(v_int, config)
    v_next = RESET_FNS[config.reset](v_int, s_t, float(config.threshold))
    if config.min_v_mem is not None:
        m = float(config.min_v_mem)
        v_next = torch.relu(v_next - m) + m  # sinabs' formula, kept for bit-exactness
    return s_t, v_next


def neuron_multi_step(x: torch.Tensor, v: torch.Tensor, config: NeuronConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop :func:`neuron_step` over time: ``x [T, B, ...]``, ``v [B, ...]`` ->
    ``(spikes [T, B, ...], v_last [B, ...])``. Pure."""
    out = []
    for t in range(x.shape[0]):
        s_t, v = neuron_step(x[t], v, config)
        out.append(s_t)
    return torch.stack(out, 0), v


MultiStepStrategy = Callable[["SpikingNeuron", torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SpikingNeuron(nn.Module):
    """A layer of spiking neurons, multi-step: ``x [T, B, ...] -> spikes [T, B, ...]``.

    Thin: it stores :attr:`config`, builds the initial state (zeros), checks the state's
    shape and delegates the time loop to :meth:`multi_step`. The membrane state :attr:`v`
    (``[B, ...]``) persists across calls (streaming) until :meth:`reset`; after a reset
    it takes the next input's shape; an input with another shape without a reset raises
    :class:`NeuronStateError`. The state is a plain attribute, not a buffer, so it never
    appears in ``state_dict()`` (checkpoints hold weights only).

    Extension point (rate-based backprop and other training modes): the whole time loop
    lives in :meth:`multi_step` ``(x [T,B,...], v0 [B,...]) -> (spikes [T,B,...],
    v_last [B,...])``. Change it either by subclassing, or per instance by setting
    :attr:`strategy` to a callable ``strategy(neuron, x, v0) -> (spikes, v_last)``
    (``None`` restores the default BPTT loop); :func:`set_strategy` does that for every
    neuron of a model. A strategy can use the pure pieces :func:`neuron_step`,
    :func:`surrogate_grad` ``(v, config)`` (``ds/dv``), :data:`SPIKE_FNS` and
    :data:`RESET_FNS` with ``neuron.config``; it must not modify ``x`` or ``v0``.
    Whatever it returns as ``v_last`` becomes the stored state; the spikes it returns
    are what the next layer sees (e.g. a rate pass may return ``[1, B, ...]`` mean
    rates whose gradient path is ``x * eligibility``).
    """

    def __init__(self, config: NeuronConfig) -> None:
        super().__init__()
        if not isinstance(config, NeuronConfig):
            raise ConfigError("neuron.config", type(config).__name__, "a NeuronConfig")
        self.config = config
        self.v: Optional[torch.Tensor] = None
        self.strategy: Optional[MultiStepStrategy] = None

    def reset(self) -> None:
        """Forget the membrane state; the next input defines its shape."""
        self.v = None

    def initial_state(self, x_t: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like one step of input ``[B, ...]``."""
        return torch.zeros_like(x_t)

    def multi_step(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The time loop (override point): BPTT through :func:`neuron_step`."""
        return neuron_multi_step(x, v, self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: input currents ``[T, B, ...]`` float. Returns spikes ``[T, B, ...]`` float."""
        if x.dim() < 2:
            raise ConfigError("neuron input", tuple(x.shape), "a tensor [T, B, ...] (time first)")
        if self.v is None:
            v0 = self.initial_state(x[0])
        elif tuple(self.v.shape) != tuple(x.shape[1:]):
            raise NeuronStateError(self._name(), tuple(self.v.shape), tuple(x.shape[1:]))
        else:
            v0 = self.v
        if self.strategy is None:
            spikes, v_last = self.multi_step(x, v0)
        else:
            spikes, v_last = self.strategy(self, x, v0)
        self.v = v_last
        return spikes

    def _name(self) -> str:
        return f"SpikingNeuron({self.config.profile})"

    def extra_repr(self) -> str:
        c = self.config
        return (f"profile={c.profile!r}, decay={c.decay}, threshold={c.threshold}, reset={c.reset!r}, "
                f"spike={c.spike!r}, min_v_mem={c.min_v_mem}, surrogate={c.surrogate!r}({c.surrogate_width})")


class RecurrentSpikingNeuron(SpikingNeuron):
    """A layer of ``features`` spiking neurons with an all-to-all recurrent weight (snnTorch
    ``RLeaky(all_to_all=True)``): at step t the input current is ``x_t + W_rec s_{t-1}``.

    ``x [T, B, features] -> spikes [T, B, features]``; ``W_rec`` is :attr:`recurrent`
    (``nn.Linear(features, features, bias=False)``, PyTorch's default init), so the layer adds
    ``features**2`` weights. The state is the membrane :attr:`v` and the last spikes :attr:`s`
    (both ``[B, features]``, zeros after :meth:`reset`). Inside a :class:`~flexsnn.models.tfsnn.TFSNN`
    stage the recurrence runs at the stage's own T (a TTM between stages changes the steps the
    next stage sees, not this loop). Trained by BPTT only: rate-based backprop and QAT strategies
    do not model ``W_rec``, so installing a :attr:`strategy` makes :meth:`forward` raise.
    """

    def __init__(self, config: NeuronConfig, features: int, *, learn_decay: bool = False) -> None:
        super().__init__(config)
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ConfigError("neuron.features", features, "an integer >= 1 (width of the recurrent layer)")
        self.features = int(features)
        self.recurrent = nn.Linear(self.features, self.features, bias=False)
        self.decay_logit: Optional[nn.Parameter] = None
        if learn_decay:
            d = min(float(config.decay), 1.0 - 1e-4)
            self.decay_logit = nn.Parameter(torch.full((self.features,), float(torch.logit(torch.tensor(d)))))
        self.s: Optional[torch.Tensor] = None

    def decay(self) -> Optional[torch.Tensor]:
        """Per-neuron leak ``sigmoid(decay_logit)`` ``[features]``, or None (``config.decay``)."""
        return None if self.decay_logit is None else torch.sigmoid(self.decay_logit)

    def reset(self) -> None:
        super().reset()
        self.s = None

    def multi_step(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BPTT loop with the recurrent current; the last spikes go to :attr:`s` (for streaming)."""
        s = self.s if self.s is not None else torch.zeros_like(v)
        decay = self.decay()
        out = []
        for t in range(x.shape[0]):
            s, v = neuron_step(x[t] + self.recurrent(s), v, self.config, decay)
            out.append(s)
        self.s = s
        return torch.stack(out, 0), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: input currents ``[T, B, features]`` float. Returns spikes ``[T, B, features]``."""
        if x.dim() != 3 or x.shape[-1] != self.features:
            raise ConfigError("recurrent neuron input", tuple(x.shape), f"[T, B, {self.features}] (time first)")
        if self.strategy is not None:
            raise ConfigError("neuron.strategy", self._name(), "no strategy (BPTT) on a recurrent neuron",
                              hint="rate-based backprop and QAT do not model the recurrent weight; train it "
                                   "with --backprop bptt and without --qat")
        return super().forward(x)

    def _name(self) -> str:
        return f"RecurrentSpikingNeuron({self.config.profile}, {self.features})"


def make_neuron(profile: str, **overrides) -> SpikingNeuron:
    """A :class:`SpikingNeuron` of a named profile (``"paper-lif"`` or ``"speck-iaf"``),
    with any :class:`NeuronConfig` field overridden (e.g. ``threshold=2.0``).

    Raises:
        ConfigError: unknown profile or field, or an invalid value.
    """
    return SpikingNeuron(neuron_config(profile, **overrides))


def iter_neurons(module: nn.Module) -> Iterator[SpikingNeuron]:
    """Every :class:`SpikingNeuron` inside ``module`` (in ``modules()`` order)."""
    for m in module.modules():
        if isinstance(m, SpikingNeuron):
            yield m


def reset_neurons(module: nn.Module) -> None:
    """Reset the state of every neuron in ``module`` (the one reset path)."""
    for n in iter_neurons(module):
        n.reset()


def set_strategy(module: nn.Module, strategy: Optional[MultiStepStrategy]) -> None:
    """Set :attr:`SpikingNeuron.strategy` of every neuron in ``module`` (``None``: default)."""
    for n in iter_neurons(module):
        n.strategy = strategy
