"""Model zoo: named TFSNN builders (Speck2e nets for DVS input, the MTT paper's static-image nets).

``build_model(name, **kwargs) -> TFSNN``; ``list_models() -> list[ZooEntry]``. Every builder
takes keyword-only, JSON-serialisable arguments (they go into checkpoint sidecars) and returns
a :class:`~flexsnn.models.tfsnn.TFSNN` whose stages are built from *blocks*: ``granularity``
``g`` consecutive blocks form one stage (g = 1: one stage per block, the paper's MTT; g =
number of blocks: one stage, i.e. NMT). ``T`` is the initial uniform time step count.
The returned model carries ``zoo_name`` and ``zoo_kwargs`` (the resolved builder arguments).

Speck nets (``speck-iaf`` neurons, input ``(2, 34, 34)`` DVS frames): no biases anywhere,
sum pooling (``sinabs.layers.SumPool2d``), BatchNorm only with ``batch_norm=True`` (the
paper's first SDT phase; fold it away before export), first TTMs in ``"trim"`` mode.

Paper nets (``paper-lif`` neurons, static images ``(3, 32, 32)``): ``resnet18``, ``resnet19``,
``vgg`` (VGG14 of the paper's appendix A.1), with BN; ``width`` scales the channels so that
tests can run them on CPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from flexsnn.errors import ConfigError
from flexsnn.models.neurons import SpikingNeuron, make_neuron
from flexsnn.models.tfsnn import TFSNN, Block, fold_time, group_blocks  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: ``name``, ``neuron_profile``, ``input_shape`` ``(C, H, W)`` of one frame,
    ``num_classes`` (default), ``description``."""

    name: str
    neuron_profile: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str


def _neuron(profile: str, overrides: Optional[dict]) -> SpikingNeuron:
    return make_neuron(profile, **(overrides or {}))


# --------------------------------------------------------------------------- Speck nets
def _sum_pool(k: int) -> nn.Module:
    import sinabs.layers as sl

    return sl.SumPool2d(kernel_size=k)


def _speck_conv(name: str, c_in: int, c_out: int, *, stride: int = 1, pool: int = 0,
                batch_norm: bool, neuron: Optional[dict]) -> Block:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(_neuron("speck-iaf", neuron))
    if pool:
        layers.append(_sum_pool(pool))
    return name, layers


READOUTS = ("spiking", "linear")


def _speck_fc(name: str, n_in: int, n_out: int, *, neuron: Optional[dict], readout: str = "spiking") -> Block:
    if readout not in READOUTS:
        raise ConfigError("readout", readout, f"one of {READOUTS}",
                          hint="spiking = the chip's spike counts; linear = real-valued logits (not deployable)")
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(n_in, n_out, bias=False)]
    return name, layers + ([_neuron("speck-iaf", neuron)] if readout == "spiking" else [])


def _speck_model(blocks: list[Block], *, num_classes: int, T: int, granularity: int) -> TFSNN:
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="speck-iaf", num_classes=num_classes,
                 input_shape=(2, 34, 34), default_T=T, first_ttm_mode="trim", input_ttm_mode="trim")


def speck3c1fc(*, batch_norm: bool = False, num_classes: int = 10, T: int = 10, granularity: int = 1,
               neuron: Optional[dict] = None, readout: str = "spiking", width: int = 8,
               channels: Optional[Sequence[int]] = None) -> TFSNN:
    """The paper's class of Speck2e net (6,160 weights at ``width`` 8, no biases), input ``(2, 34, 34)``::

        conv1: Conv(2->w, 3, pad 1)   [BN] IAF SumPool2    34x34 -> 17x17
        conv2: Conv(w->2w, 3, pad 1)  [BN] IAF SumPool2    17x17 -> 8x8
        conv3: Conv(2w->2w, 3, stride 2, pad 1) [BN] IAF   8x8 -> 4x4
        fc:    Flatten Linear(32w->num_classes) IAF

    ``width`` w: conv1's channels (8, the paper's net; 16 doubles every layer, 4x the weights,
    the widest whose layers each still fit a Speck2e core). ``channels``: the three conv
    layers' channels ``(c1, c2, c3)`` instead (e.g. ``(16, 32, 64)``); fc then has ``16 c3`` inputs.

    ``neuron``: overrides of the ``speck-iaf`` profile (e.g. ``{"surrogate": "triangle"}``).
    ``readout``: ``"spiking"`` (default: the fc layer's IAF spike counts are the output, what the
    chip counts) or ``"linear"`` (no neuron after the fc layer: real-valued logits per step, as
    the TET/TMC papers' and the official Speck TFSNN code's training; not exportable to the chip).
    """
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 64:
        raise ConfigError("width", width, "an integer in [1, 64]", hint="8 is the paper's net; 16 doubles it")
    if channels is None:
        c1, c2, c3 = width, 2 * width, 2 * width
    else:
        if len(channels) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 1024
                                     for c in channels):
            raise ConfigError("channels", channels, "three integers in [1, 1024] (conv1, conv2, conv3)",
                              hint="e.g. [16, 32, 64]; or use width")
        c1, c2, c3 = channels
    blocks = [
        _speck_conv("conv1", 2, c1, pool=2, batch_norm=batch_norm, neuron=neuron),
        _speck_conv("conv2", c1, c2, pool=2, batch_norm=batch_norm, neuron=neuron),
        _speck_conv("conv3", c2, c3, stride=2, batch_norm=batch_norm, neuron=neuron),
        _speck_fc("fc", 16 * c3, num_classes, neuron=neuron, readout=readout),
    ]
    return _speck_model(blocks, num_classes=num_classes, T=T, granularity=granularity)


def speck4c(*, batch_norm: bool = False, num_classes: int = 10, T: int = 10, granularity: int = 1,
            neuron: Optional[dict] = None, readout: str = "spiking") -> TFSNN:
    """A deeper Speck2e net (5 cores; every layer fits a core, see tests), input ``(2, 34, 34)``::

        conv1: Conv(2->16, 3, pad 1)  [BN] IAF SumPool2   34x34 -> 17x17
        conv2: Conv(16->32, 3, pad 1) [BN] IAF SumPool2   17x17 -> 8x8
        conv3: Conv(32->64, 3, pad 1) [BN] IAF SumPool2   8x8 -> 4x4
        conv4: Conv(64->64, 3, pad 1) [BN] IAF            4x4
        fc:    Flatten Linear(1024->num_classes) IAF

    ``readout``: as :func:`speck3c1fc`.
    """
    blocks = [
        _speck_conv("conv1", 2, 16, pool=2, batch_norm=batch_norm, neuron=neuron),
        _speck_conv("conv2", 16, 32, pool=2, batch_norm=batch_norm, neuron=neuron),
        _speck_conv("conv3", 32, 64, pool=2, batch_norm=batch_norm, neuron=neuron),
        _speck_conv("conv4", 64, 64, batch_norm=batch_norm, neuron=neuron),
        _speck_fc("fc", 1024, num_classes, neuron=neuron, readout=readout),
    ]
    return _speck_model(blocks, num_classes=num_classes, T=T, granularity=granularity)


# --------------------------------------------------------------------------- paper nets
def _conv_bn(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class SpikingBasicBlock(nn.Module):
    """The paper's spiking residual block on ``[T, B, C, H, W]``::

        y = LIF( BN(conv3x3( LIF(BN(conv3x3(x))) )) + shortcut(x) )

    ``shortcut`` is ``BN(conv1x1, stride)`` when channels or resolution change, else identity.
    """

    temporal = True

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, neuron: Optional[dict] = None) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.spike1 = _neuron("paper-lif", neuron)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if (c_in != c_out or stride != 1) else None
        self.spike2 = _neuron("paper-lif", neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else fold_time(self.shortcut, x)
        y = self.spike1(fold_time(self.conv1, x))
        return self.spike2(fold_time(self.conv2, y) + skip)


def _stem(c_in: int, c_out: int, neuron: Optional[dict]) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), _neuron("paper-lif", neuron)]


def _head(c_in: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(c_in, num_classes)]


def _resnet(plan: Sequence[tuple[int, int, int]], stem_out: int, *, num_classes: int, T: int,
            granularity: int, neuron: Optional[dict], in_channels: int, image_size: int) -> TFSNN:
    blocks: list[Block] = []
    for i, (c_in, c_out, stride) in enumerate(plan):
        layers: list[nn.Module] = _stem(in_channels, stem_out, neuron) if i == 0 else []
        layers.append(SpikingBasicBlock(c_in, c_out, stride=stride, neuron=neuron))
        if i == len(plan) - 1:
            layers += _head(c_out, num_classes)
        blocks.append((f"block{i + 1}", layers))
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="paper-lif", num_classes=num_classes,
                 input_shape=(in_channels, image_size, image_size), default_T=T)


def resnet18(*, num_classes: int = 10, width: int = 64, T: int = 4, granularity: int = 1,
             neuron: Optional[dict] = None, in_channels: int = 3, image_size: int = 32) -> TFSNN:
    """Spiking ResNet-18 of the paper (CIFAR form): stem conv3x3(w), 8 basic blocks
    (w, w, 2w/2, 2w, 4w/2, 4w, 8w/2, 8w), global average pool, linear. 8 blocks = 8 stages;
    the stem belongs to stage 1, the head to the last. ``width`` w = 64 in the paper."""
    w = width
    plan = [(w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1),
            (2 * w, 4 * w, 2), (4 * w, 4 * w, 1), (4 * w, 8 * w, 2), (8 * w, 8 * w, 1)]
    return _resnet(plan, w, num_classes=num_classes, T=T, granularity=granularity, neuron=neuron,
                   in_channels=in_channels, image_size=image_size)


def resnet19(*, num_classes: int = 10, width: int = 128, T: int = 4, granularity: int = 1,
             neuron: Optional[dict] = None, in_channels: int = 3, image_size: int = 32) -> TFSNN:
    """Spiking ResNet-19 of the paper: stem conv3x3(w), 8 basic blocks (w x3, 2w/2, 2w x2,
    4w/2, 4w), global average pool, one linear layer. ``width`` w = 128 in the paper."""
    w = width
    plan = [(w, w, 1), (w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 2 * w, 1),
            (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
    return _resnet(plan, w, num_classes=num_classes, T=T, granularity=granularity, neuron=neuron,
                   in_channels=in_channels, image_size=image_size)


_VGG14 = [(1, False), (1, True), (2, False), (2, True), (4, False), (4, False), (4, True),
          (8, False), (8, False), (8, True), (8, False), (8, False), (8, True)]


def _vgg_blocks(plan: Sequence[tuple[int, bool]], *, width: int, in_channels: int, image_size: int,
                num_classes: int, neuron: Optional[dict]) -> list[Block]:
    """Conv3x3-BN-LIF blocks, one per ``(channel multiple of width, 2x2 average pooling after)``
    in ``plan``, the last one followed by Flatten and a linear readout."""
    blocks: list[Block] = []
    c_in, size = in_channels, image_size
    for i, (mult, pool) in enumerate(plan):
        c_out = mult * width
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                   _neuron("paper-lif", neuron)]
        if pool:
            layers.append(nn.AvgPool2d(2))
            size //= 2
        if i == len(plan) - 1:
            if size < 1:
                pools = sum(1 for _, p in plan if p)
                raise ConfigError("image_size", image_size, f"at least {2 ** pools} ({pools} 2x2 poolings)")
            layers += [nn.Flatten(), nn.Linear(c_out * size * size, num_classes)]
        blocks.append((f"conv{i + 1}", layers))
        c_in = c_out
    return blocks


def vgg(*, num_classes: int = 10, width: int = 64, T: int = 4, granularity: int = 1,
        neuron: Optional[dict] = None, in_channels: int = 3, image_size: int = 32) -> TFSNN:
    """Spiking VGG14 of the paper (appendix A.1): 13 conv3x3-BN-LIF layers with channels
    w, w, 2w, 2w, 4w x3, 8w x6 and 2x2 average pooling after layers 2, 4, 7, 10, 13, then one
    linear layer (on 8w x (image_size/32)^2 features). Every conv layer is a block (stage)."""
    blocks = _vgg_blocks(_VGG14, width=width, in_channels=in_channels, image_size=image_size,
                         num_classes=num_classes, neuron=neuron)
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="paper-lif", num_classes=num_classes,
                 input_shape=(in_channels, image_size, image_size), default_T=T)


def convnet(*, num_classes: int = 10, width: int = 16, T: int = 4, granularity: int = 1,
            neuron: Optional[dict] = None, in_channels: int = 1, image_size: int = 28) -> TFSNN:
    """A small paper-lif CNN for quick static-image runs on a CPU (e.g. MNIST)::

        conv1: Conv3x3(c_in -> w) BN LIF AvgPool2
        conv2: Conv3x3(w -> 2w) BN LIF AvgPool2
        fc:    Flatten Linear(2w * (image_size/4)^2 -> num_classes)     # real-valued readout

    Three blocks = three stages under MTT."""
    if image_size < 4:
        raise ConfigError("image_size", image_size, "at least 4 (two 2x2 poolings)")
    size = image_size // 4
    blocks: list[Block] = [
        ("conv1", [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                   _neuron("paper-lif", neuron), nn.AvgPool2d(2)]),
        ("conv2", [nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                   _neuron("paper-lif", neuron), nn.AvgPool2d(2)]),
        ("fc", [nn.Flatten(), nn.Linear(2 * width * size * size, num_classes)]),
    ]
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="paper-lif", num_classes=num_classes,
                 input_shape=(in_channels, image_size, image_size), default_T=T)


def vggsnn(*, num_classes: int = 10, width: int = 64, T: int = 10, granularity: int = 1,
           neuron: Optional[dict] = None, in_channels: int = 2, image_size: int = 48) -> TFSNN:
    """VGGSNN of TET/TMC's DVS experiments (zju-bmi-lab/TMC ``models/VGG_models.py``): 8 conv3x3-BN-LIF
    layers w, 2w, /2, 4w, 4w, /2, 8w, 8w, /2, 8w, 8w, /2 (2x2 average pooling) and one linear
    layer on 8w x (image_size/16)^2 features; input ``(2, 48, 48)`` DVS frames. Every conv
    layer is a block (stage); the pooling and the readout join the block before them."""
    plan = [(1, False), (2, True), (4, False), (4, True), (8, False), (8, True), (8, False), (8, True)]
    blocks = _vgg_blocks(plan, width=width, in_channels=in_channels, image_size=image_size,
                         num_classes=num_classes, neuron=neuron)
    return TFSNN(group_blocks(blocks, granularity), neuron_profile="paper-lif", num_classes=num_classes,
                 input_shape=(in_channels, image_size, image_size), default_T=T, first_ttm_mode="trim",
                 input_ttm_mode="trim")


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[str, tuple[ZooEntry, Callable[..., TFSNN]]] = {
    "speck3c1fc": (ZooEntry("speck3c1fc", "speck-iaf", (2, 34, 34), 10,
                            "3 conv + 1 linear Speck2e net (6,160 weights, no biases) for N-MNIST-like DVS input"),
                   speck3c1fc),
    "speck4c": (ZooEntry("speck4c", "speck-iaf", (2, 34, 34), 10,
                         "4 conv + 1 linear Speck2e net (5 cores, no biases) for DVS input"), speck4c),
    "resnet18": (ZooEntry("resnet18", "paper-lif", (3, 32, 32), 10,
                          "spiking ResNet-18 of the MTT paper (8 blocks = 8 stages), static images"), resnet18),
    "resnet19": (ZooEntry("resnet19", "paper-lif", (3, 32, 32), 10,
                          "spiking ResNet-19 of the MTT paper (8 blocks = 8 stages), static images"), resnet19),
    "vgg": (ZooEntry("vgg", "paper-lif", (3, 32, 32), 10,
                     "spiking VGG14 of the MTT paper (13 conv stages), static images"), vgg),
    "convnet": (ZooEntry("convnet", "paper-lif", (1, 28, 28), 10,
                         "small paper-lif CNN (2 conv + linear readout) for quick static-image runs"), convnet),
    "vggsnn": (ZooEntry("vggsnn", "paper-lif", (2, 48, 48), 10,
                        "VGGSNN of TET/TMC's DVS experiments (8 conv stages), 48x48 DVS frames"), vggsnn),
}


def list_models() -> list[ZooEntry]:
    """Every zoo model, in registry order."""
    return [entry for entry, _ in _REGISTRY.values()]


def build_model(name: str, **kwargs: Any) -> TFSNN:
    """Build zoo model ``name`` with keyword arguments ``kwargs`` (see each builder).

    The model gets ``zoo_name`` and ``zoo_kwargs`` attributes (the full resolved arguments,
    JSON-serialisable), for checkpoint sidecars.

    Raises:
        ConfigError: unknown name or argument, or an invalid value.
    """
    if name not in _REGISTRY:
        raise ConfigError("model", name, f"one of {sorted(_REGISTRY)}")
    builder = _REGISTRY[name][1]
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"model.{unknown[0]}", kwargs[unknown[0]], f"an argument of {name}: {sorted(params)}")
    model = builder(**kwargs)
    resolved = {k: p.default for k, p in params.items()}
    resolved.update(kwargs)
    model.zoo_name = name
    model.zoo_kwargs = resolved
    return model


def with_min_v_mem(model: TFSNN, floor: float) -> TFSNN:
    """A copy of zoo ``model`` whose neurons all have ``min_v_mem = floor`` (threshold units),
    same weights and temporal configuration (e.g. a deeper floor to deploy with than the one it
    was trained with). ``zoo_kwargs`` records the new floor.

    Raises:
        ConfigError: ``model`` is not from :func:`build_model`, or ``floor`` is not below the
            threshold.
    """
    name = getattr(model, "zoo_name", None)
    if name is None:
        raise ConfigError("model", type(model).__name__, "a zoo model (flexsnn.models.zoo.build_model)")
    kwargs = dict(model.zoo_kwargs)
    kwargs["neuron"] = {**(kwargs.get("neuron") or {}), "min_v_mem": float(floor)}
    out = build_model(name, **kwargs)
    out.load_state_dict(model.state_dict(), strict=True)
    out.train(model.training)
    return out


# --------------------------------------------------------------------------- extension (issue 10)
def register(entry: ZooEntry, builder: Callable[..., TFSNN]) -> None:
    """Add a model to the zoo under ``entry.name`` (builders take keyword-only arguments).

    Raises:
        ConfigError: the name is taken.
    """
    if entry.name in _REGISTRY:
        raise ConfigError("model", entry.name, "a name not yet in the zoo")
    _REGISTRY[entry.name] = (entry, builder)


from flexsnn.models import seq_models as _seq_models  # noqa: E402  (imports no zoo at module level)

register(ZooEntry("seqfc", "paper-lif", (1, 1, 28), 10,
                  "fully connected LIF net (2 x 64, decay 0.99; recurrent=true adds W_rec) for sequential MNIST, "
                  "[T, B, 1, 1, F] input"),
         _seq_models.seqfc)
