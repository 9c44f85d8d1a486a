"""Fuzz tests: mutated chip images, checkpoints, N-MNIST .bin files and config JSON end in a
named flexsnn error or a correct load, never another exception.

Mutations: a value replaced by any JSON value (wrong types, huge integers, NaN, nested
containers), a member deleted or added, a list truncated or extended, the document re-hashed
or not (so the checks behind the hash are reached too), bytes truncated, flipped or random.
Hypothesis runs a bounded number of examples with a fixed seed (``derandomize``), so the
suite stays fast and reproducible.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from chip_builders import nmnist_image
from flexsnn.converters.chip_check import check_chip_image
from flexsnn.converters.chip_image import DOC_HASH, JSON_MEMBER, ChipImage
from flexsnn.data.nmnist import decode_bin, encode_bin
from flexsnn.errors import CheckpointError, ChipConstraintError, ConfigError, EventFormatError
from flexsnn.fields import canonical_sha256
from flexsnn.models.checkpoint import CheckpointMeta, load_model, save_checkpoint, sidecar_path

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.integers(-3, 40),
    st.builds(lambda: 10 ** 3999), st.builds(lambda: -(10 ** 300)),
    st.sampled_from([0.5, -1.0, 3.0, float("nan"), float("inf")]),
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=8),
    st.sampled_from(["yes", "no", "subtract", "zero", "core0_weights", "int8", "speck2e"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)


def _paths(doc, prefix=()):
    """Every path into a JSON tree (keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc, data):
    """Apply one random structural or value mutation to ``doc`` (in place) via hypothesis ``data``."""
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths), label="path")
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    kind = data.draw(st.sampled_from(["replace", "delete", "add", "truncate", "extend"]), label="kind")
    if kind == "replace":
        parent[key] = data.draw(json_values, label="value")
    elif kind == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif kind == "add":
        target = parent[key]
        if isinstance(target, dict):
            target[data.draw(st.text(min_size=1, max_size=6), label="new key")] = data.draw(json_values)
        elif isinstance(target, list):
            target.append(data.draw(json_values, label="new item"))
        else:
            parent[key] = [target, target]
    elif kind == "truncate":
        target = parent[key]
        if isinstance(target, (list, str)) and target:
            parent[key] = target[: len(target) // 2]
        else:
            parent[key] = None
    else:
        target = parent[key]
        parent[key] = (target * 3) if isinstance(target, (list, str)) else [target]


def _dumps(doc) -> bytes:
    import sys

    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(doc).encode()
    finally:
        sys.set_int_max_str_digits(old)


def _rehash(doc, key):
    import sys

    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        doc[key] = canonical_sha256(doc, exclude=key)
    except (ValueError, TypeError):
        pass
    finally:
        sys.set_int_max_str_digits(old)


# ---- chip images ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chip_parts(tmp_path_factory):
    path = nmnist_image(0).save(tmp_path_factory.mktemp("fuzz") / "n.chip")
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return path


def _load_chip(path: Path, *, trust_edits: bool = False) -> None:
    """A load either fails with a named error or returns an image that passes the validator."""
    try:
        image = ChipImage.load(path, trust_edits=trust_edits)
    except (CheckpointError, ChipConstraintError) as err:
        assert str(err) and "Traceback" not in str(err)
        event(f"{type(err).__name__}: {str(err).split(': ', 1)[-1][:40]}")
        return
    check_chip_image(image)
    event("loaded")


@FUZZ
@given(data=st.data(), rehash=st.booleans(), trust=st.booleans())
def test_fuzz_chip_image_document(chip_parts, tmp_path, data, rehash, trust):
    doc = json.loads(chip_parts[JSON_MEMBER])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not _paths(doc):
            break
        _mutate(doc, data)
    if rehash and isinstance(doc, dict):
        _rehash(doc, DOC_HASH)
    members = dict(chip_parts, **{JSON_MEMBER: _dumps(doc)})
    _load_chip(_write_zip(tmp_path / "f.chip", members), trust_edits=trust)


@FUZZ
@given(data=st.data())
def test_fuzz_chip_image_arrays(chip_parts, tmp_path, data):
    """A .npy member replaced by other bytes, with the recorded sha256 (and document hash)
    updated so the npy parser and the dtype/shape checks are reached."""
    import hashlib

    name = data.draw(st.sampled_from(sorted(n for n in chip_parts if n.startswith("arrays/"))))
    blob = chip_parts[name]
    how = data.draw(st.sampled_from(["truncate", "flip", "random", "other-array"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1:]
    elif how == "random":
        blob = data.draw(st.binary(max_size=300))
    else:
        buf = io.BytesIO()
        shape = tuple(data.draw(st.lists(st.integers(0, 4), max_size=4)))
        dtype = data.draw(st.sampled_from(["int8", "int16", "int64", "float32", "bool"]))
        np.save(buf, np.zeros(shape, dtype=dtype))
        blob = buf.getvalue()
    doc = json.loads(chip_parts[JSON_MEMBER])
    doc["arrays"][name[len("arrays/"):-len(".npy")]]["sha256"] = hashlib.sha256(blob).hexdigest()
    _rehash(doc, DOC_HASH)
    members = dict(chip_parts, **{JSON_MEMBER: _dumps(doc), name: blob})
    _load_chip(_write_zip(tmp_path / "a.chip", members))


@FUZZ
@given(data=st.data())
def test_fuzz_chip_image_bytes(chip_parts, tmp_path, data):
    """The whole file truncated, bit-flipped, or random bytes."""
    raw = _write_zip(tmp_path / "src.chip", chip_parts).read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    else:
        raw = data.draw(st.binary(max_size=2000))
    path = tmp_path / "b.chip"
    path.write_bytes(raw)
    _load_chip(path)


# ---- checkpoints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_parts(tmp_path_factory):
    from flexsnn.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("speck3c1fc")
    path = save_checkpoint(tmp_path_factory.mktemp("fuzzck") / "ck.safetensors", model,
                           CheckpointMeta(model_name="speck3c1fc", model_kwargs=model.zoo_kwargs,
                                          neuron_profile="speck-iaf", stages=model.stage_names,
                                          scheme={"name": "mtt", "s": 3, "T": 10}, t_range=(1, 10),
                                          metrics={"accuracy": 0.5}, epoch=3))
    return path.read_bytes(), sidecar_path(path).read_bytes()


def _load_checkpoint(path: Path) -> None:
    try:
        model, meta = load_model(path)
    except CheckpointError as err:
        assert str(err) and "Traceback" not in str(err)
        event(f"CheckpointError: {err.reason[:40]}")
        return
    event("loaded")
    assert isinstance(meta, CheckpointMeta) and all(torch.isfinite(p).all() for p in model.parameters())


@FUZZ
@given(data=st.data(), rehash=st.booleans())
def test_fuzz_checkpoint_sidecar(checkpoint_parts, tmp_path, data, rehash):
    """Mutated sidecars. With the hash recomputed, ``meta.model_kwargs`` is left alone: it is
    passed to the model builder, and a kwarg like ``width=10**9`` would try to allocate it (the
    hash refuses such an edit; a checkpoint is trusted once its hash matches)."""
    weights, side = checkpoint_parts
    doc = json.loads(side)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(doc) if not (rehash and p[:2] == ("meta", "model_kwargs"))]
        if not paths:
            break
        _mutate(doc, data)
    if rehash and isinstance(doc, dict):
        meta = doc.get("meta")
        assume(not isinstance(meta, dict) or meta.get("model_kwargs", {}) in (
            {}, json.loads(side)["meta"]["model_kwargs"]) or not isinstance(meta.get("model_kwargs"), dict))
        _rehash(doc, "document_sha256")
    path = tmp_path / "ck.safetensors"
    path.write_bytes(weights)
    sidecar_path(path).write_bytes(_dumps(doc))
    _load_checkpoint(path)


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_weights(checkpoint_parts, tmp_path, data):
    """Mutated safetensors bytes, with the sidecar's weights hash (and document hash) updated
    so the safetensors reader, the model fit and the NaN check are reached."""
    import hashlib

    weights, side = checkpoint_parts
    how = data.draw(st.sampled_from(["truncate", "flip-header", "flip-data", "random", "nan"]))
    raw = bytearray(weights)
    header_len = int.from_bytes(raw[:8], "little")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip-header":
        i = data.draw(st.integers(0, min(len(raw) - 1, 8 + header_len)))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "flip-data":
        i = data.draw(st.integers(8 + header_len, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "random":
        raw = bytearray(data.draw(st.binary(max_size=500)))
    else:  # a float32 NaN written over some weight
        i = data.draw(st.integers(8 + header_len, len(raw) - 4))
        raw[i:i + 4] = np.float32("nan").tobytes()
    doc = json.loads(side)
    doc["weights_sha256"] = hashlib.sha256(bytes(raw)).hexdigest()
    _rehash(doc, "document_sha256")
    path = tmp_path / "ck.safetensors"
    path.write_bytes(bytes(raw))
    sidecar_path(path).write_bytes(_dumps(doc))
    _load_checkpoint(path)


# ---- N-MNIST .bin files --------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_fuzz_bin_files(data):
    """Valid recordings mutated (truncated, flipped, random, records repeated) decode to valid
    events or raise EventFormatError naming the byte offset."""
    from flexsnn.data.events import make_events, validate_events
    from flexsnn.data.nmnist import NMNIST_SENSOR

    n = data.draw(st.integers(0, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    raw = encode_bin(make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n),
                                 np.sort(rng.integers(0, 300_000, n))))
    how = data.draw(st.sampled_from(["none", "truncate", "flip", "random", "repeat"]))
    if how == "truncate" and raw:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    elif how == "random":
        raw = data.draw(st.binary(max_size=200))
    elif how == "repeat":
        raw = raw + raw
    try:
        events = decode_bin(raw, source="fuzz.bin")
    except EventFormatError as err:
        assert err.source == "fuzz.bin" and err.byte_offset is not None and 0 <= err.byte_offset <= len(raw)
        event(f"EventFormatError: {err.reason[:30]}")
        return
    event("decoded")
    validate_events(events, NMNIST_SENSOR)


# ---- config files --------------------------------------------------------------------------
CONFIG_KEYS = ["lr", "epochs", "batch_size", "T", "seed", "limit", "augment", "amp", "model", "model_kwargs",
               "scheme", "grad_clip", "weight_decay", "loss", "optimizer", "device", "eval_every"]


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=4),
       scheme=st.dictionaries(st.sampled_from(["name", "s", "T", "t_min", "t_max", "non_increasing"]),
                              json_scalars, max_size=3), as_text=st.booleans())
def test_fuzz_config_files(tmp_path, doc, scheme, as_text):
    """Config JSON with random values (types, huge integers, NaN, nesting) resolves to a
    TrainConfig or raises ConfigError naming the field."""
    from flexsnn.commands.train import resolve_train_config

    if scheme:
        doc = dict(doc, scheme=scheme)
    path = tmp_path / "c.json"
    path.write_bytes(_dumps(doc) if as_text else _dumps(doc)[: max(1, len(_dumps(doc)) // 2)])
    try:
        cfg = resolve_train_config(path, {}, {})
    except ConfigError as err:
        assert str(err) and "Traceback" not in str(err)
        event(f"ConfigError: {err.field.split(': ')[-1]}")
        return
    event("resolved")
    assert cfg.to_dict()["lr"] == cfg.lr
