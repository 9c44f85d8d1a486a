"""ChipImage files: round trip; every kind of damage refused by name (hash, schema, field types,
sizes, limits); tampering detected by the document hash; --trust-edits and version 1."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from flexsnn.converters.chip_image import DOC_HASH, JSON_MEMBER, ChipImage, with_core
from flexsnn.converters.export import export_chip_image
from flexsnn.errors import CheckpointError, ChipConstraintError
from flexsnn.fields import canonical_sha256
from flexsnn.models.zoo import build_model


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    return export_chip_image(build_model("speck3c1fc"))[0]


@pytest.fixture(scope="module")
def saved(image, tmp_path_factory):
    return image.save(tmp_path_factory.mktemp("chip") / "a.chip")


def _rewrite(src, dst, *, doc_fn=None, arrays_fn=None, rehash=False, extra=None):
    """Copy ``src`` to ``dst`` with the document and/or arrays edited; ``rehash`` recomputes the
    document hash (an edit made by someone who knows the format)."""
    with zipfile.ZipFile(src) as zf:
        doc = json.loads(zf.read(JSON_MEMBER))
        members = {n: zf.read(n) for n in zf.namelist() if n != JSON_MEMBER}
    if arrays_fn:
        members = arrays_fn(doc, members)
    if doc_fn:
        doc_fn(doc)
    if rehash and isinstance(doc, dict):
        doc[DOC_HASH] = canonical_sha256(doc, exclude=DOC_HASH)
    members.update(extra or {})
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr(JSON_MEMBER, json.dumps(doc))
        for n, b in members.items():
            zf.writestr(n, b)
    return dst


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _set(*keys_value):
    """doc_fn setting a nested key path to a value: _set("cores", 0, "stride", [1])."""
    *keys, value = keys_value

    def fn(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


def _pop(*keys):
    def fn(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d.pop(keys[-1])
    return fn


def test_round_trip(image, saved):
    loaded = ChipImage.load(saved)
    assert loaded.summary() == image.summary()
    assert loaded.layer_scales == image.layer_scales
    assert loaded.format_version == 2


# (id, doc_fn, error class, message fragment); every edit is first refused as tampered, then,
# with the hash recomputed, by the named field
FIELD_DAMAGE = [
    ("arrays-as-list", _set("arrays", []), CheckpointError, "field arrays = [] is invalid: expected a JSON object"),
    ("array-entry-string", _set("arrays", "core0_weights", "x"), CheckpointError, "field arrays.core0_weights"),
    ("threshold-string", _set("cores", 0, "threshold_high", "12"), CheckpointError, "cores[0].threshold_high = '12'"),
    ("core-id-string", _set("cores", 1, "core", "1"), CheckpointError, "cores[1].core = '1'"),
    ("input-shape-2-values", _set("input", "shape", [2, 34]), CheckpointError, "input.shape = [2, 34]"),
    ("stride-1-value", _set("cores", 0, "stride", [1]), CheckpointError, "cores[0].stride = [1]"),
    ("float-threshold", _set("cores", 0, "threshold_high", 12.0), CheckpointError, "cores[0].threshold_high = 12.0"),
    ("float-kernel", _set("cores", 0, "kernel_size", 3.0), CheckpointError, "cores[0].kernel_size = 3.0"),
    ("float-pooling", _set("cores", 0, "destinations", 0, "pooling", 2.0), CheckpointError,
     "cores[0].destinations[0].pooling = 2.0"),
    ("bool-threshold", _set("cores", 0, "threshold_high", True), CheckpointError, "threshold_high = True"),
    ("merge-yes", _set("input", "merge_polarities", "yes"), CheckpointError, "input.merge_polarities = 'yes'"),
    ("leak-no", _set("cores", 0, "leak_enabled", "no"), CheckpointError, "cores[0].leak_enabled = 'no'"),
    ("reset-unknown", _set("cores", 0, "reset_mode", "half"), CheckpointError, "cores[0].reset_mode = 'half'"),
    ("4000-digit-int", _set("cores", 0, "threshold_high", 10 ** 3999), CheckpointError,
     "cores[0].threshold_high = <integer of about 4000 digits>"),
    ("missing-stride", _pop("cores", 0, "stride"), CheckpointError, "cores[0].stride = '<missing>'"),
    ("extra-core-field", _set("cores", 0, "gain", 2), CheckpointError, "cores[0].gain = 2"),
    ("unknown-array-name", _set("cores", 0, "weights", "nope"), CheckpointError, "cores[0].weights = 'nope'"),
    ("readout-string", _set("readout", {"num_classes": "10", "channel_erratum": True}), CheckpointError,
     "readout.num_classes = '10'"),
    ("nan-scale", _set("layer_scales", 0, "NaN"), CheckpointError, "layer_scales[0]"),
    ("threshold-zero", _set("cores", 0, "threshold_high", 0), ChipConstraintError, "thresholds"),
    ("threshold-low-positive", _set("cores", 0, "threshold_low", 3), ChipConstraintError, "thresholds"),
    ("output-shape-zero", _set("cores", 2, "output_shape", [10, 0, 0]), ChipConstraintError, "shapes"),
    ("input-pooling-2", _set("input", "pooling", 2), None, None),  # consistent shapes: only the hash sees it
    ("input-shape-mismatch", _set("input", "shape", [2, 17, 17]), ChipConstraintError, "input_shape"),
    ("self-loop-bad-shape", _set("cores", 2, "destinations", [{"core": 0, "pooling": 1}]), ChipConstraintError,
     "destination shape"),
]


@pytest.mark.parametrize("name,doc_fn,err,match", FIELD_DAMAGE, ids=[d[0] for d in FIELD_DAMAGE])
def test_field_damage_refused_by_name(saved, tmp_path, name, doc_fn, err, match):
    with pytest.raises(CheckpointError, match="tampered") as tampered:
        ChipImage.load(_rewrite(saved, tmp_path / "t.chip", doc_fn=doc_fn))
    assert tampered.value.field == DOC_HASH
    if err is None:
        ChipImage.load(_rewrite(saved, tmp_path / "r.chip", doc_fn=doc_fn, rehash=True))
        return
    with pytest.raises(err, match=_re(match)) as e:
        ChipImage.load(_rewrite(saved, tmp_path / "r.chip", doc_fn=doc_fn, rehash=True))
    assert "Traceback" not in str(e.value)


def _re(text):
    import re

    return re.escape(text)


def test_5000_digit_integer_refused(saved, tmp_path):
    """Beyond Python's int-from-text limit: refused as invalid JSON, naming the limit."""
    with zipfile.ZipFile(saved) as zf:
        text = zf.read(JSON_MEMBER).decode()
    path = tmp_path / "big.chip"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n) if n != JSON_MEMBER else
                         text.replace('"threshold_high": ', '"threshold_high": ' + "9" * 5000, 1))
    with pytest.raises(CheckpointError, match="not valid JSON.*4300 digits"):
        ChipImage.load(path)


def test_input_pooling_edit_is_caught_by_the_hash_and_by_the_sensor(saved, tmp_path):
    """``input.pooling = 2`` while core 0 expects 34x34: self-consistent (a 68x68 sensor), so the
    document hash refuses it, and with --trust-edits the image states its sensor as 68x68."""
    from flexsnn.deploy.async_sim import input_sensor

    path = _rewrite(saved, tmp_path / "p.chip", doc_fn=_set("input", "pooling", 2))
    with pytest.raises(CheckpointError, match="tampered"):
        ChipImage.load(path)
    img = ChipImage.load(path, trust_edits=True)
    assert (input_sensor(img).width, input_sensor(img).height) == (68, 68)


def test_threshold_edit_by_one_is_tampering(image, saved, tmp_path):
    thr = image.cores[0].threshold_high
    path = _rewrite(saved, tmp_path / "t.chip", doc_fn=_set("cores", 0, "threshold_high", thr - 1))
    with pytest.raises(CheckpointError, match="tampered"):
        ChipImage.load(path)
    assert ChipImage.load(path, trust_edits=True).cores[0].threshold_high == thr - 1


def test_truncated_file_refused(saved, tmp_path):
    path = tmp_path / "a.chip"
    path.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable chip image"):
        ChipImage.load(path)


def test_random_bytes_and_non_json_refused(tmp_path):
    path = tmp_path / "r.chip"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(CheckpointError, match="not a readable chip image"):
        ChipImage.load(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(JSON_MEMBER, b"{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ChipImage.load(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("other.json", b"{}")
    with pytest.raises(CheckpointError, match="not a readable chip image"):
        ChipImage.load(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ChipImage.load(tmp_path / "none.chip")


def test_tampered_array_refused_by_hash(saved, tmp_path):
    def flip(doc, members):
        name = "arrays/core0_weights.npy"
        w = np.load(io.BytesIO(members[name]))
        w[0, 0, 0, 0] ^= 1
        members[name] = _npy(w)
        return members

    with pytest.raises(CheckpointError, match="sha256 of array 'core0_weights'"):
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", arrays_fn=flip))


def test_missing_array_member_refused(saved, tmp_path):
    def drop(doc, members):
        members.pop("arrays/core0_biases.npy")
        return members

    with pytest.raises(CheckpointError, match="core0_biases"):
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", arrays_fn=drop))


def test_extra_large_member_is_not_read(saved, tmp_path, monkeypatch):
    """A 400 MB extra member is refused by name from the zip directory, without reading it."""
    path = tmp_path / "big.chip"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
        with dst.open("extra/blob.bin", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(400):
                fh.write(chunk)
    assert path.stat().st_size < 5 << 20  # zeros compress: the file is small, the member is 400 MB
    reads = []
    orig = zipfile.ZipFile.open

    def spy(self, name, *a, **k):
        reads.append(getattr(name, "filename", name))
        return orig(self, name, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(CheckpointError, match="unexpected member 'extra/blob.bin'"):
        ChipImage.load(path)
    assert "extra/blob.bin" not in reads


def test_array_member_larger_than_its_shape_is_not_read(saved, tmp_path):
    def inflate(doc, members):
        members["arrays/core0_biases.npy"] = members["arrays/core0_biases.npy"] + bytes(1 << 20)
        return members

    with pytest.raises(CheckpointError, match="more than the .* its header allows"):
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", arrays_fn=inflate))


def test_wrong_schema_and_version_refused(saved, tmp_path):
    with pytest.raises(CheckpointError, match="magic"):
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", doc_fn=lambda d: d.pop("magic")))
    with pytest.raises(CheckpointError, match="format_version 99"):
        ChipImage.load(_rewrite(saved, tmp_path / "c.chip", doc_fn=_set("format_version", 99), rehash=True))


def test_version_1_needs_trust_edits(image, saved, tmp_path):
    """A version-1 image (array hashes only) is refused with the re-export command, and read
    with trust_edits=True."""
    def to_v1(doc):
        doc.pop(DOC_HASH)
        doc["format_version"] = 1

    path = _rewrite(saved, tmp_path / "v1.chip", doc_fn=to_v1)
    with pytest.raises(CheckpointError, match=r"format_version 1.*flexsnn export --checkpoint"):
        ChipImage.load(path)
    loaded = ChipImage.load(path, trust_edits=True)
    assert loaded.format_version == 1
    assert loaded.summary().splitlines()[1:] == image.summary().splitlines()[1:]
    again = ChipImage.load(loaded.save(tmp_path / "v2.chip"))  # saving upgrades to version 2
    assert again.format_version == 2


def test_wrong_dtype_refused_even_with_consistent_hash(saved, tmp_path):
    def widen(doc, members):
        name = "arrays/core0_weights.npy"
        w = np.load(io.BytesIO(members[name])).astype(np.int16) * 3  # out of int8 range too
        members[name] = _npy(w)
        doc["arrays"]["core0_weights"].update(dtype="int16", sha256=hashlib.sha256(members[name]).hexdigest())
        return members

    with pytest.raises(ChipConstraintError) as err:
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", arrays_fn=widen, rehash=True))
    fields = {v.field for v in err.value.violations}
    assert "weights dtype" in fields and "weight value" in fields


def test_recorded_dtype_mismatch_refused(saved, tmp_path):
    with pytest.raises(CheckpointError, match="has dtype int8"):
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", rehash=True,
                                doc_fn=lambda d: d["arrays"]["core0_weights"].update(dtype="int16")))


def test_limits_checked_on_load(saved, tmp_path):
    def edit(d):
        d["cores"][0]["threshold_high"] = 40000
        d["cores"][1]["stride"] = [3, 3]

    with pytest.raises(ChipConstraintError) as err:
        ChipImage.load(_rewrite(saved, tmp_path / "b.chip", doc_fn=edit, rehash=True))
    fields = {v.field for v in err.value.violations}
    assert {"thresholds", "stride_y", "output_shape"} <= fields


def test_save_refuses_an_invalid_image(image, tmp_path):
    bad = with_core(image, image.output_core, destinations=())
    bad = with_core(bad, 0, threshold_low=5, threshold_high=5)
    with pytest.raises(ChipConstraintError, match="thresholds"):
        bad.save(tmp_path / "x.chip")
    assert not (tmp_path / "x.chip").exists()


def test_every_damage_kind_is_one_line_from_inspect(saved, tmp_path, capsys):
    """Through `flexsnn inspect`: each damaged image exits 1 with `error: <file>...`, no traceback."""
    from flexsnn.cli import main

    for i, (name, doc_fn, err, _match) in enumerate(FIELD_DAMAGE):
        if err is None:
            continue
        path = _rewrite(saved, tmp_path / f"{name}.chip", doc_fn=doc_fn, rehash=True)
        assert main(["inspect", str(path)]) == 1, name
        out = capsys.readouterr()
        assert out.err.startswith("error: ") and "Traceback" not in out.err, (name, out.err)
        assert str(path) in out.err, name
