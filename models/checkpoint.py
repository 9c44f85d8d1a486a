"""Checkpoints: safetensors weights + a JSON sidecar, never a pickle.

A checkpoint ``run/ck.safetensors`` has its metadata in ``run/ck.json``
(:class:`CheckpointMeta`). The JSON records the sha256 of the weights file, so a weights file
from another run, a truncated file or an edited file is refused by name, and
``document_sha256``, the sha256 of the sidecar's own canonical JSON, so an edited T, scheme or
stage list is refused as tampered (sidecars written before this hash existed still load; the
weights hash still covers them). Every metadata field's type is checked before use, and
NaN/Inf weights are refused by tensor name. Both files are written atomically (weights first,
then the sidecar that vouches for them).

This module lives in ``models`` (not ``training``) because the converter, which must not
import training code, loads checkpoints too. The trainer's own resume state (optimizer,
scheduler, RNG) is stored by ``flexsnn.training`` in the same two-file format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from dataclasses import fields as fields_of
from pathlib import Path
from typing import Any

import torch
from torch import nn

import flexsnn
from flexsnn import fields
from flexsnn.errors import CheckpointError
from flexsnn.io_utils import atomic_path, atomic_write_json, to_json

DOC_HASH = "document_sha256"

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
    doc = json.loads(to_json(doc))  # exactly what a reader will see (tuples -> lists, NumPy -> numbers)
    doc[DOC_HASH] = fields.canonical_sha256(doc, exclude=DOC_HASH)
    atomic_write_json(sidecar_path(path), doc)
    return path


MAX_SIDECAR_BYTES = 64 << 20


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
    if side.stat().st_size > MAX_SIDECAR_BYTES:
        raise CheckpointError(side, f"metadata is {side.stat().st_size} bytes, more than {MAX_SIDECAR_BYTES}",
                              "the file is damaged; use another checkpoint")
    doc = fields.json_loads(side.read_bytes(), side, allow_nan=True)
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise CheckpointError(side, f"not a {kind} file (kind={fields.short(doc.get('kind')) if isinstance(doc, dict) else None})",
                              "pass a checkpoint written by flexsnn")
    if DOC_HASH in doc:
        try:
            actual = fields.canonical_sha256(doc, exclude=DOC_HASH)
        except (ValueError, TypeError):  # pragma: no cover - parsed JSON always re-serialises
            actual = ""
        if doc[DOC_HASH] != actual:
            raise CheckpointError(side, f"tampered: the metadata's sha256 {actual[:12]}... does not match the "
                                  f"recorded {DOC_HASH} (a field such as T, scheme or stages was edited)",
                                  "use the checkpoint as written by flexsnn, or another checkpoint",
                                  field=DOC_HASH, value=doc[DOC_HASH])
    if not isinstance(doc.get("weights_sha256"), str):
        raise CheckpointError(side, f"field weights_sha256 = {fields.short(doc.get('weights_sha256'))} is invalid: "
                              "expected the 64-character sha256 of the weights", "use another checkpoint",
                              field="weights_sha256", value=doc.get("weights_sha256"))
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
    """The sidecar's ``meta`` object as :class:`CheckpointMeta`, every field's type checked."""
    side = sidecar_path(path)
    r = fields.FieldReader(side, "use the checkpoint as written by flexsnn, or another checkpoint")
    if not isinstance(raw, dict):
        raise CheckpointError(side, f"malformed metadata (\"meta\" is a {type(raw).__name__}, not an object)",
                              "use another checkpoint", field="meta", value=raw)
    known = {f.name for f in fields_of(CheckpointMeta)}
    unknown = set(raw) - known
    if unknown:
        raise CheckpointError(side, f"unknown metadata fields {sorted(unknown)}",
                              "the checkpoint comes from a newer flexsnn; upgrade", field=f"meta.{sorted(unknown)[0]}")
    if raw.get("format_version") != CHECKPOINT_FORMAT or isinstance(raw.get("format_version"), bool):
        raise CheckpointError(side, f"checkpoint format {fields.short(raw.get('format_version'))} not supported "
                              f"(expected {CHECKPOINT_FORMAT})", "re-train or convert the checkpoint",
                              field="meta.format_version", value=raw.get("format_version"))
    missing = [k for k in ("model_name", "model_kwargs", "neuron_profile") if k not in raw]
    if missing:
        raise CheckpointError(side, f"malformed metadata (missing meta.{missing[0]})", "use another checkpoint",
                              field=f"meta.{missing[0]}")
    t_range = r.ints(raw.get("t_range", [1, 1]), "meta.t_range", length=2, lo=1, hi=1 << 20)
    if t_range[0] > t_range[1]:
        r.fail("meta.t_range", list(t_range), "(T_min, T_max) with T_min <= T_max")
    return CheckpointMeta(
        model_name=r.str(raw["model_name"], "meta.model_name", max_len=256),
        model_kwargs=r.obj(raw["model_kwargs"], "meta.model_kwargs", extra_ok=True),
        neuron_profile=r.str(raw["neuron_profile"], "meta.neuron_profile", max_len=256),
        stages=tuple(r.str(v, f"meta.stages[{i}]", max_len=256)
                     for i, v in enumerate(r.list(raw.get("stages", []), "meta.stages", max_len=1024))),
        scheme=_scheme(r, raw.get("scheme", {})),
        t_range=t_range,  # type: ignore[arg-type]
        dataset=r.str(raw.get("dataset", ""), "meta.dataset", max_len=256),
        metrics=r.obj(raw.get("metrics", {}), "meta.metrics", extra_ok=True),
        epoch=r.int(raw.get("epoch", 0), "meta.epoch", 0, 1 << 31),
        extra=r.obj(raw.get("extra", {}), "meta.extra", extra_ok=True),
        flexsnn_version=r.str(raw.get("flexsnn_version", ""), "meta.flexsnn_version", max_len=64),
        format_version=CHECKPOINT_FORMAT,
    )


def _scheme(r: fields.FieldReader, raw: Any) -> dict[str, Any]:
    """``meta.scheme``: an object; its name a string and its integer settings integers >= 1."""
    scheme = r.obj(raw, "meta.scheme", extra_ok=True)
    if "name" in scheme:
        r.str(scheme["name"], "meta.scheme.name", max_len=64)
    for key in ("T", "s", "T_min", "T_max"):
        if key in scheme and scheme[key] is not None:
            r.int(scheme[key], f"meta.scheme.{key}", 1, 1 << 20)
    return scheme


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[tuple[str, int]]:
    """``(name, count)`` of every floating tensor holding NaN or Inf values."""
    out = []
    for name, t in tensors.items():
        if torch.is_floating_point(t):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                out.append((name, bad))
    return out


def check_finite(tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise :class:`CheckpointError` naming every tensor (layer) with NaN/Inf values."""
    bad = nonfinite_tensors(tensors)
    if bad:
        listed = ", ".join(f"{n!r} ({c} values)" for n, c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CheckpointError(source, f"NaN or Inf weights in {listed}",
                              "the training diverged; use an earlier checkpoint, or retrain with a lower "
                              "learning rate or --grad-clip", field=bad[0][0], value=bad[0][1])


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Return ``(state_dict, meta)`` of a checkpoint, verified; never unpickles."""
    tensors, doc = load_tensors(path, kind=CHECKPOINT_KIND)
    meta = _meta_from_dict(doc.get("meta", {}), Path(path).with_suffix(".safetensors"))
    check_finite(tensors, Path(path).with_suffix(".safetensors"))
    return tensors, meta


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
