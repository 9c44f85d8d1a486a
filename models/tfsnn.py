"""Temporally flexible SNN (TFSNN): ordered stages, each at its own T, joined by TTMs.

A :class:`TFSNN` holds stages ``1..n``; stage ``i`` runs at ``t_i`` time steps, where
``temporal_config = (t_1, ..., t_n)``. Data flow for an input ``x [T_in, B, C, H, W]``::

    x --TTM(T_in -> t_1, input_ttm_mode)--> stage 1 --TTM(t_1 -> t_2, first_ttm_mode)-->
      stage 2 --TTM(t_2 -> t_3, "even")--> ... --> stage n --> logits [t_n, B, num_classes]

Static images should enter as ``[1, B, C, H, W]``: the input TTM copies the frame to ``t_1``
steps, which is the paper's repetition of the image (an input already repeated to exactly
``t_1`` frames gives the same result; any other T would be summed or copied by groups). Event models set
``first_ttm_mode="trim"`` (the paper's Speck code keeps the first frames when it must
shorten) and ``input_ttm_mode="trim"``.

With a uniform T every TTM is the identity, so the TFSNN computes exactly what the plain SNN
(the same layers applied in order) computes.

Inside a stage, layers that carry state over time (:class:`SpikingNeuron`, residual blocks
with neurons: anything with ``temporal = True``) receive ``[T, B, ...]``; stateless layers
(conv, BN, pooling, linear, flatten) run once with T folded into the batch
(:func:`fold_time`).
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import SpikingNeuron, reset_neurons
from flexsnn.models.ttm import TTM_MODES, temporal_transform


def fold_time(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a stateless ``layer`` on ``x [T, B, ...]`` with T folded into the batch:
    ``layer(x.flatten(0, 1))`` reshaped back to ``[T, B, ...]``."""
    t, b = x.shape[0], x.shape[1]
    y = layer(x.reshape(t * b, *x.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])


def is_temporal(layer: nn.Module) -> bool:
    """True for layers that take ``[T, B, ...]`` themselves (neurons, blocks with neurons)."""
    return isinstance(layer, SpikingNeuron) or bool(getattr(layer, "temporal", False))


def run_layers(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` in order to ``x [T, B, ...]`` (temporal ones directly, others folded)."""
    for layer in layers:
        x = layer(x) if is_temporal(layer) else fold_time(layer, x)
    return x


class Stage(nn.Module):
    """One stage: a name and a flat ``nn.Sequential`` of layers that run at one T.

    ``forward(x [T, B, ...]) -> [T, B, ...]``; T is whatever the input has (the TFSNN puts the
    stage's T there with a TTM).
    """

    def __init__(self, name: str, layers: Sequence[nn.Module] | nn.Sequential) -> None:
        super().__init__()
        self.name = name
        self.layers = layers if isinstance(layers, nn.Sequential) else nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_layers(self.layers, x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


@dataclass
class FiringRates:
    """Spike statistics per stage, filled while :meth:`TFSNN.record_rates` is active.

    ``spikes[name]``: total spikes emitted by the stage's neurons; ``neuron_steps[name]``:
    sum over calls of (neurons x batch x T). :attr:`rates` = spikes per neuron per step.
    """

    spikes: dict[str, float] = field(default_factory=dict)
    neuron_steps: dict[str, int] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, float]:
        """Stage name -> spikes per neuron per time step (0.0 before any forward)."""
        return {k: (self.spikes[k] / n if n else 0.0) for k, n in self.neuron_steps.items()}


class TFSNN(nn.Module):
    """A temporally flexible SNN (see module docstring).

    Args:
        stages: the stages, input to output (names must be unique).
        neuron_profile: profile of its neurons (``"paper-lif"`` / ``"speck-iaf"``).
        num_classes: size of the output.
        input_shape: ``(C, H, W)`` of one input frame.
        temporal_config: initial ``(t_1, ..., t_n)``; default uniform ``default_T``.
        default_T: uniform T used when ``temporal_config`` is None.
        first_ttm_mode: mode of the TTM from stage 1 to stage 2 (``"even"``/``"trim"``).
        input_ttm_mode: mode of the TTM from the input's T to ``t_1``.

    Attributes: :attr:`stages` (``nn.ModuleList`` of :class:`Stage`), :attr:`temporal_config`,
    :attr:`num_stages`, :attr:`stage_names`.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        neuron_profile: str,
        num_classes: int,
        input_shape: tuple[int, int, int],
        temporal_config: Optional[Sequence[int]] = None,
        default_T: int = 1,
        first_ttm_mode: str = "even",
        input_ttm_mode: str = "even",
    ) -> None:
        super().__init__()
        if not stages:
            raise ConfigError("tfsnn.stages", stages, "at least one Stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError("tfsnn.stages", names, "unique stage names")
        for name, mode in (("tfsnn.first_ttm_mode", first_ttm_mode), ("tfsnn.input_ttm_mode", input_ttm_mode)):
            if mode not in TTM_MODES:
                raise ConfigError(name, mode, f"one of {TTM_MODES}")
        self.stages = nn.ModuleList(stages)
        self.neuron_profile = neuron_profile
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.first_ttm_mode = first_ttm_mode
        self.input_ttm_mode = input_ttm_mode
        self._temporal_config: tuple[int, ...] = ()
        if temporal_config is None:
            self.set_uniform(default_T)
        else:
            self.set_temporal_config(temporal_config)

    # ------------------------------------------------------------------ temporal config
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def temporal_config(self) -> tuple[int, ...]:
        """Current ``(t_1, ..., t_n)``, time steps per stage."""
        return self._temporal_config

    def set_temporal_config(self, config: Sequence[int]) -> None:
        """Set the time steps of every stage.

        Raises:
            ConfigError: wrong length or a value that is not an integer >= 1.
        """
        config = tuple(config)
        if len(config) != self.num_stages:
            raise ConfigError("temporal_config", config, f"{self.num_stages} values (one per stage: "
                              f"{', '.join(self.stage_names)})")
        values = []
        for i, t in enumerate(config):
            try:
                value = operator.index(t)
            except TypeError:
                value = None
            if value is None or isinstance(t, bool) or value < 1:
                raise ConfigError(f"temporal_config[{i}]", t, "an integer >= 1")
            values.append(value)
        self._temporal_config = tuple(values)

    def set_uniform(self, T: int) -> None:
        """Run every stage at ``T`` time steps (the TFSNN becomes a plain SNN at T)."""
        self.set_temporal_config((T,) * self.num_stages)

    # ------------------------------------------------------------------ running
    def reset(self) -> None:
        """Reset the state of every neuron (the one reset path of the model)."""
        reset_neurons(self)

    def flat_layers(self) -> list[nn.Module]:
        """Every layer of every stage, input to output (no TTMs: they have no weights)."""
        return [layer for stage in self.stages for layer in stage.layers]

    def ttm_mode(self, boundary: int) -> str:
        """Mode of the TTM entering stage ``boundary`` (0 = input -> stage 1)."""
        if boundary == 0:
            return self.input_ttm_mode
        return self.first_ttm_mode if boundary == 1 else "even"

    def forward(self, x: torch.Tensor, *, reset: bool = True) -> torch.Tensor:
        """``x [T_in, B, C, H, W]`` float -> per-step outputs ``[t_n, B, num_classes]`` float.

        Each call is one whole sequence: neuron states are reset first (``reset=False``
        continues from the previous call's state, for streaming at a uniform T).
        """
        if x.dim() != 5 or tuple(x.shape[2:]) != self.input_shape:
            raise ConfigError("input", tuple(x.shape), f"[T, B, {', '.join(map(str, self.input_shape))}]",
                              "time first; use flexsnn.data.frames.to_time_major for [B, T, ...]")
        if reset:
            self.reset()
        for i, (stage, t) in enumerate(zip(self.stages, self._temporal_config)):
            x = temporal_transform(x, t, mode=self.ttm_mode(i))
            x = stage(x)
        return x

    # ------------------------------------------------------------------ statistics
    @contextlib.contextmanager
    def record_rates(self) -> Iterator[FiringRates]:
        """Context that records per-stage firing rates of every forward inside it::

            with model.record_rates() as rec:
                model(x)
            rec.rates   # {"conv1": 0.12, ...} spikes per neuron per step

        Rates count only the stage's own neurons (for energy ~ sum_i t_i * R_i).
        """
        rec = FiringRates()
        handles = []
        for stage in self.stages:
            rec.spikes[stage.name] = 0.0
            rec.neuron_steps[stage.name] = 0
            for m in stage.modules():
                if isinstance(m, SpikingNeuron):
                    handles.append(m.register_forward_hook(self._rate_hook(rec, stage.name)))
        try:
            yield rec
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _rate_hook(rec: FiringRates, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            rec.spikes[name] += float(output.detach().sum())
            rec.neuron_steps[name] += int(output.numel())
        return hook

    def extra_repr(self) -> str:
        return (f"neuron_profile={self.neuron_profile!r}, num_classes={self.num_classes}, "
                f"input_shape={self.input_shape}, temporal_config={self._temporal_config}, "
                f"first_ttm_mode={self.first_ttm_mode!r}, input_ttm_mode={self.input_ttm_mode!r}")


Block = tuple[str, list[nn.Module]]


def group_blocks(blocks: Sequence[Block], granularity: int) -> list[Stage]:
    """Group consecutive blocks, ``granularity`` per stage (the last stage may hold fewer).

    A stage's name joins its blocks' names with ``+``; its layers are the blocks' layers,
    flattened into one ``nn.Sequential``.

    Raises:
        ConfigError: ``granularity`` below 1.
    """
    if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1:
        raise ConfigError("granularity", granularity, "an integer >= 1 (blocks per stage)")
    stages = []
    for start in range(0, len(blocks), granularity):
        group = blocks[start:start + granularity]
        name = "+".join(n for n, _ in group)
        stages.append(Stage(name, [layer for _, layers in group for layer in layers]))
    return stages
