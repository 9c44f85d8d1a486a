"""Checkpoints: safetensors + JSON sidecar round trips through load_model; every bad
checkpoint is refused with a CheckpointError that names the file and the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexsnn.errors import CheckpointError
from flexsnn.fields import canonical_sha256
from flexsnn.models.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_model,
    load_tensors,
    read_meta,
    save_checkpoint,
    save_tensors,
    sidecar_path,
)
from flexsnn.models.zoo import build_model


def _trained(name: str, **kwargs):
    model = build_model(name, **kwargs)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.num_batches_tracked.fill_(17)
    return model.eval()


def _meta(model, **extra) -> CheckpointMeta:
    return CheckpointMeta(model_name=model.zoo_name, model_kwargs=model.zoo_kwargs,
                          neuron_profile=model.neuron_profile, stages=model.stage_names,
                          scheme={"name": "mtt", "s": 3}, t_range=(1, 10), dataset="saccade-mnist",
                          metrics={"accuracy": 0.9}, epoch=4, **extra)


@pytest.fixture
def saved(tmp_path: Path):
    model = _trained("speck3c1fc", batch_norm=True)
    path = save_checkpoint(tmp_path / "run" / "ck.safetensors", model, _meta(model))
    return model, path


@pytest.mark.parametrize("name, kwargs", [("speck3c1fc", {"batch_norm": True}), ("speck4c", {}),
                                          ("resnet18", {"width": 2, "num_classes": 5})])
def test_round_trip_through_load_model(tmp_path, name, kwargs):
    model = _trained(name, **kwargs)
    path = save_checkpoint(tmp_path / "ck.safetensors", model, _meta(model))
    assert path.is_file() and sidecar_path(path).is_file()
    loaded, meta = load_model(path)
    assert meta == _meta(model)
    assert meta.stages == model.stage_names and meta.t_range == (1, 10)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    model.set_temporal_config((3,) * model.num_stages)
    loaded.eval().set_temporal_config((3,) * loaded.num_stages)
    x = torch.rand(3, 2, *model.input_shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_sidecar_is_plain_json_and_json_path_accepted(saved):
    model, path = saved
    doc = json.loads(sidecar_path(path).read_text())
    assert doc["kind"] == "flexsnn-checkpoint" and doc["weights_file"] == "ck.safetensors"
    assert doc["meta"]["model_name"] == "speck3c1fc" and len(doc["weights_sha256"]) == 64
    assert read_meta(sidecar_path(path)).model_name == "speck3c1fc"
    state, meta = load_checkpoint(path)
    assert set(state) == set(model.state_dict())


def test_no_temporary_files_left(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.json", "ck.safetensors"]


def _refused(path, reason_part: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert reason_part in info.value.reason, info.value.reason
    assert info.value.hint
    return info.value


def test_missing_weights(tmp_path):
    err = _refused(tmp_path / "nothing.safetensors", "weights file not found")
    assert err.path.endswith("nothing.safetensors")


def test_missing_sidecar(saved):
    _, path = saved
    sidecar_path(path).unlink()
    err = _refused(path, "metadata sidecar not found")
    assert err.path.endswith("ck.json")


def test_edited_weights_fail_the_hash(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last weight
    path.write_bytes(bytes(data))
    _refused(path, "sha256")


def test_truncated_weights_fail_the_hash(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    _refused(path, "sha256")


def test_weights_from_another_run_fail_the_hash(saved, tmp_path):
    model, path = saved
    other = _trained("speck3c1fc", batch_norm=True)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    other_path = save_checkpoint(tmp_path / "other.safetensors", other, _meta(other))
    path.write_bytes(other_path.read_bytes())
    _refused(path, "sha256")


def test_foreign_json(saved):
    _, path = saved
    sidecar_path(path).write_text(json.dumps({"kind": "something-else", "meta": {}}))
    _refused(path, "not a flexsnn-checkpoint file")
    sidecar_path(path).write_text(json.dumps([1, 2, 3]))
    _refused(path, "not a flexsnn-checkpoint file")


def test_damaged_json(saved):
    _, path = saved
    sidecar_path(path).write_text('{"kind": "flexsnn-checkp')
    _refused(path, "not valid JSON")


def _write_doc(side: Path, doc, *, rehash: bool = True) -> None:
    """Write a sidecar document; ``rehash`` recomputes its document hash (an edit by someone
    who knows the format), so the checks behind the hash are reached."""
    if rehash and isinstance(doc, dict):
        doc["document_sha256"] = canonical_sha256(doc, exclude="document_sha256")
    side.write_text(json.dumps(doc))


def _edit_meta(path: Path, *, rehash: bool = True, **changes) -> None:
    side = sidecar_path(path)
    doc = json.loads(side.read_text())
    doc["meta"].update(changes)
    _write_doc(side, doc, rehash=rehash)


def test_mismatched_model(saved):
    _, path = saved
    _edit_meta(path, model_name="speck4c", model_kwargs={"batch_norm": True})
    _refused(path, "weights do not fit model 'speck4c'")


def test_mismatched_model_kwargs(saved):
    _, path = saved
    _edit_meta(path, model_kwargs={"batch_norm": False})  # the weights carry BN tensors
    _refused(path, "weights do not fit model 'speck3c1fc'")


def test_unknown_model_name(saved):
    _, path = saved
    _edit_meta(path, model_name="lenet")
    _refused(path, "cannot build model 'lenet'")


def test_unknown_model_kwarg(saved):
    _, path = saved
    _edit_meta(path, model_kwargs={"depth": 50})
    _refused(path, "cannot build model 'speck3c1fc'")


def test_newer_metadata_fields_and_format(saved):
    _, path = saved
    _edit_meta(path, hologram=True)
    _refused(path, "unknown metadata fields ['hologram']")
    _edit_meta(path, format_version=99)
    doc = json.loads(sidecar_path(path).read_text())
    del doc["meta"]["hologram"]
    _write_doc(sidecar_path(path), doc)
    _refused(path, "checkpoint format 99 not supported")


def test_malformed_metadata(saved):
    _, path = saved
    doc = json.loads(sidecar_path(path).read_text())
    del doc["meta"]["model_name"]
    _write_doc(sidecar_path(path), doc)
    _refused(path, "malformed metadata")


def test_meta_that_is_not_an_object(saved):
    _, path = saved
    doc = json.loads(sidecar_path(path).read_text())
    doc["meta"] = ["speck3c1fc"]
    _write_doc(sidecar_path(path), doc)
    _refused(path, "malformed metadata")


def test_pickle_is_never_loaded(tmp_path):
    """A pickle renamed to .safetensors with a sidecar that vouches for it is refused by the
    safetensors reader, never unpickled."""
    import hashlib

    path = tmp_path / "evil.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    side = sidecar_path(path)
    side.write_text(json.dumps({"kind": "flexsnn-checkpoint", "meta": {},
                                "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    _refused(path, "cannot read safetensors")


def test_save_requires_safetensors_suffix(tmp_path):
    model = build_model("speck3c1fc")
    with pytest.raises(CheckpointError, match="ck.safetensors"):
        save_checkpoint(tmp_path / "ck.pt", model, _meta(model))


def test_generic_tensors_round_trip_and_kind_check(tmp_path):
    tensors = {"step": torch.tensor(5), "m": torch.randn(3, 2, dtype=torch.float64)}
    path = save_tensors(tmp_path / "state.safetensors", tensors, {"kind": "flexsnn-train-state", "epoch": 2})
    loaded, doc = load_tensors(path, kind="flexsnn-train-state")
    assert doc["epoch"] == 2 and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with pytest.raises(CheckpointError, match="not a flexsnn-checkpoint"):
        load_tensors(path, kind="flexsnn-checkpoint")


@pytest.mark.parametrize("changes", [{"t_range": [1, 20]}, {"scheme": {"name": "sdt", "T": 10}},
                                     {"stages": ["a", "b"]}, {"epoch": 5}])
def test_sidecar_edits_are_tampering(saved, changes):
    """The document hash covers T, scheme, stages and every other field, not only the weights."""
    _, path = saved
    _edit_meta(path, rehash=False, **changes)
    err = _refused(path, "tampered")
    assert err.field == "document_sha256" and err.path.endswith("ck.json")


@pytest.mark.parametrize("field,value,fragment", [
    ("t_range", [1, "10"], "meta.t_range[1] = '10'"), ("t_range", [1], "meta.t_range = [1]"),
    ("t_range", [10, 1], "T_min <= T_max"), ("epoch", 4.0, "meta.epoch = 4.0"),
    ("epoch", 10 ** 3999, "meta.epoch = <integer of about 4000 digits>"),
    ("stages", "abc", "meta.stages = 'abc'"), ("scheme", {"name": "mtt", "T": "fast"}, "meta.scheme.T = 'fast'"),
    ("model_kwargs", [1], "meta.model_kwargs = [1]"), ("model_name", 5, "meta.model_name = 5"),
    ("metrics", None, "meta.metrics = None"),
])
def test_sidecar_field_types_checked(saved, field, value, fragment):
    _, path = saved
    _edit_meta(path, **{field: value})
    err = _refused(path, fragment)
    assert err.field.startswith("meta.")


def test_5000_digit_integer_in_sidecar(saved):
    _, path = saved
    side = sidecar_path(path)
    side.write_text(side.read_text().replace('"epoch": 4', '"epoch": ' + "7" * 5000))
    _refused(path, "4300 digits")


def test_old_sidecar_without_document_hash_still_loads(saved):
    """Checkpoints written before the document hash existed: the weights hash still protects them."""
    _, path = saved
    doc = json.loads(sidecar_path(path).read_text())
    del doc["document_sha256"]
    sidecar_path(path).write_text(json.dumps(doc))
    assert load_model(path)[1].epoch == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_refused_by_layer_name(tmp_path, bad):
    model = _trained("speck3c1fc", batch_norm=True)
    name = next(n for n, _ in model.named_parameters())
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[3] = bad
    path = save_checkpoint(tmp_path / "ck.safetensors", model, _meta(model))
    err = _refused(path, f"NaN or Inf weights in {name!r} (1 values)")
    assert err.field == name


def test_sidecar_with_numpy_values_and_nan_metrics_round_trips(tmp_path):
    """Values the trainer may record (NumPy integers, a NaN loss) are written and hashed as a
    reader sees them, so the checkpoint loads."""
    import numpy as np

    model = _trained("speck3c1fc", batch_norm=True)
    meta = _meta(model, extra={"steps": np.int64(7), "loss": float("nan")})
    path = save_checkpoint(tmp_path / "ck.safetensors", model, meta)
    loaded = load_model(path)[1]
    assert loaded.extra["steps"] == 7 and loaded.extra["loss"] != loaded.extra["loss"]
