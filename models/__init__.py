"""Models: spiking neurons, surrogate gradients, the temporal transformation module (TTM),
temporally flexible SNNs (TFSNN) and the model zoo; checkpoints (safetensors + JSON).

Import the submodules directly (``flexsnn.models.neurons``, ``.ttm``, ``.tfsnn``, ``.zoo``,
``.checkpoint``); the names below are re-exported for convenience.
"""

from flexsnn.models.neurons import (
    PROFILES,
    NeuronConfig,
    NeuronStateError,
    SpikingNeuron,
    make_neuron,
    neuron_step,
    surrogate_grad,
)
from flexsnn.models.tfsnn import TFSNN, FiringRates, Stage, fold_time
from flexsnn.models.ttm import temporal_transform, ttm_groups
from flexsnn.models.zoo import ZooEntry, build_model, list_models

__all__ = [
    "PROFILES", "NeuronConfig", "NeuronStateError", "SpikingNeuron", "make_neuron", "neuron_step",
    "surrogate_grad", "TFSNN", "FiringRates", "Stage", "fold_time", "temporal_transform", "ttm_groups",
    "ZooEntry", "build_model", "list_models",
]
