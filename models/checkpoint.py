"""Checkpoints: safetensors weights + a JSON sidecar, never a pickle.

A checkpoint ``run/ck.safetensors`` has its metadata in ``run/ck.json``
(:class:`CheckpointMeta`). The JSON records the sha256 of the weights file, so a weights file
from another run, a truncated file or an edited file is refused by name. Both files are
written atomically (weights first, then the sidecar that vouches for them).

This module lives in ``models`` (not ``training``) because the converter, which must not
import training code, loads checkpoints too. The trainer's own resume state (optimizer,
scheduler, RNG) is stored by ``flexsnn.training`` in the same two-file format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import flexsnn
from flexsnn.errors import CheckpointError
from flexsnn.io_utils import atomic_path, atomic_write_json

CHECKPOINT_FORMAT = 1
CHECKPOINT_KIND = "flexsnn-checkpoint"


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything needed to rebuild and describe a trained model.

    Attributes:
        model_name: zoo name, e.g. ``"speck3c1fc"``.
        model_kwargs: keyword arguments of the zoo builder (JSON-serialisable).
        neuron_profile: ``"paper-lif"`` or ``"speck-iaf"``.
        stages: names of the model's stages, input to output.
        scheme: training scheme and its parameters, e.g. ``{"name": "mtt", "s": 3, ...}``.
        t_range: ``(T_min, T_max)`` the model was trained for.
        dataset: dataset name (``"saccade-mnist"``, ``"nmnist"``, ...).
        metrics: final metrics (fractions in [0, 1]).
        epoch: epochs completed.
        extra: anything else worth keeping (loss, backprop mode, phase...).
    """

    model_name: str
    model_kwargs: dict[str, Any]
    neuron_profile: str
    stages: tuple[str, ...] = ()
    scheme: dict[str, Any] = field(default_factory=dict)
    t_range: tuple[int, int] = (1, 1)
    dataset: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    flexsnn_version: str = flexsnn.__version__
    format_version: int = CHECKPOINT_FORMAT


def sidecar_path(weights_path: str | Path) -> Path:
    """The JSON sidecar of a ``.safetensors`` weights file."""
    return Path(weights_path).with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], document: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` (safetensors) and ``document`` + the weights' sha256 (JSON).

    The generic two-file writer behind :func:`save_checkpoint` and the trainer's resume state.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(path, "checkpoint weights must end in .safetensors",
                              f"use {path.with_suffix('.safetensors')}")
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp))
    doc = dict(document, weights_sha256=_sha256(path), weights_file=path.name)
    atomic_write_json(sidecar_path(path), doc)
    return path


def load_tensors(path: str | Path, *, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a two-file checkpoint written by :func:`save_tensors`; check kind and hash.

    Raises:
        CheckpointError: missing files, foreign JSON, wrong kind, hash mismatch, truncation.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    side = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(path, "weights file not found", "check the path (it ends in .safetensors)")
    if not side.is_file():
        raise CheckpointError(side, "metadata sidecar not found",
                              "a flexsnn checkpoint is a .safetensors file plus a .json beside it")
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(side, f"metadata is not valid JSON ({err})",
                              "the file is damaged; use another checkpoint") from err
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise CheckpointError(side, f"not a {kind} file (kind={doc.get('kind') if isinstance(doc, dict) else None!r})",
                              "pass a checkpoint written by flexsnn")
    if doc.get("weights_sha256") != _sha256(path):
        raise CheckpointError(path, "weights do not match the sha256 recorded in the sidecar",
                              "the weights file is truncated, edited or from another run")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(path, f"cannot read safetensors ({err})", "use another checkpoint") from err
    return tensors, doc


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model.state_dict()`` and ``meta`` atomically (see module docstring)."""
    doc = {"kind": CHECKPOINT_KIND, "meta": asdict(meta)}
    return save_tensors(path, model.state_dict(), doc)


def _meta_from_dict(raw: dict[str, Any], path: Path) -> CheckpointMeta:
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"malformed metadata (\"meta\" is a {type(raw).__name__}, not an object)",
                              "use another checkpoint")
    known = {f.name for f in fields(CheckpointMeta)}
    unknown = set(raw) - known
    if unknown:
        raise CheckpointError(path, f"unknown metadata fields {sorted(unknown)}",
                              "the checkpoint comes from a newer flexsnn; upgrade")
    if raw.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"checkpoint format {raw.get('format_version')!r} not supported "
                              f"(expected {CHECKPOINT_FORMAT})", "re-train or convert the checkpoint")
    try:
        raw = dict(raw, stages=tuple(raw.get("stages", ())), t_range=tuple(raw.get("t_range", (1, 1))))
        return CheckpointMeta(**raw)
    except TypeError as err:
        raise CheckpointError(path, f"malformed metadata ({err})", "use another checkpoint") from err


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Return ``(state_dict, meta)`` of a checkpoint, verified; never unpickles."""
    tensors, doc = load_tensors(path, kind=CHECKPOINT_KIND)
    return tensors, _meta_from_dict(doc.get("meta", {}), Path(path))


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint (verifies the weights hash too)."""
    return load_checkpoint(path)[1]


def load_model(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the zoo model named in the checkpoint and load its weights (strict).

    Raises:
        CheckpointError: unreadable checkpoint, unknown model, or weights that do not fit it.
    """
    from flexsnn.models.zoo import build_model

    state, meta = load_checkpoint(path)
    try:
        model = build_model(meta.model_name, **meta.model_kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"cannot build model {meta.model_name!r} with "
                              f"{meta.model_kwargs} ({err})", "is this checkpoint from another version?") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(path, f"weights do not fit model {meta.model_name!r}: {err}",
                              "the sidecar and weights belong to different models") from err
    return model, meta
