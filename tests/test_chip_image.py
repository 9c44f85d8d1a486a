"""ChipImage files: round trip, and corrupted / tampered files refused by name (hash, schema, dtype, limits)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from flexsnn.converters.chip_image import JSON_MEMBER, ChipImage, with_core
from flexsnn.converters.export import export_chip_image
from flexsnn.errors import CheckpointError, ChipConstraintError
from flexsnn.models.zoo import build_model


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    return export_chip_image(build_model("speck3c1fc"))[0]


def _rewrite(src, dst, *, doc_fn=None, arrays_fn=None):
    with zipfile.ZipFile(src) as zf:
        doc = json.loads(zf.read(JSON_MEMBER))
        members = {n: zf.read(n) for n in zf.namelist() if n != JSON_MEMBER}
    if arrays_fn:
        members = arrays_fn(doc, members)
    if doc_fn:
        doc_fn(doc)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr(JSON_MEMBER, json.dumps(doc))
        for n, b in members.items():
            zf.writestr(n, b)
    return dst


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_round_trip(image, tmp_path):
    loaded = ChipImage.load(image.save(tmp_path / "a.chip"))
    assert loaded.summary() == image.summary()
    assert loaded.layer_scales == image.layer_scales


def test_truncated_file_refused(image, tmp_path):
    path = image.save(tmp_path / "a.chip")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable chip image"):
        ChipImage.load(path)


def test_tampered_array_refused_by_hash(image, tmp_path):
    src = image.save(tmp_path / "a.chip")

    def flip(doc, members):
        name = "arrays/core0_weights.npy"
        w = np.load(io.BytesIO(members[name]))
        w[0, 0, 0, 0] ^= 1
        members[name] = _npy(w)
        return members

    with pytest.raises(CheckpointError, match="sha256 of array 'core0_weights'"):
        ChipImage.load(_rewrite(src, tmp_path / "b.chip", arrays_fn=flip))


def test_wrong_schema_and_version_refused(image, tmp_path):
    src = image.save(tmp_path / "a.chip")
    with pytest.raises(CheckpointError, match="magic"):
        ChipImage.load(_rewrite(src, tmp_path / "b.chip", doc_fn=lambda d: d.pop("magic")))
    with pytest.raises(CheckpointError, match="format_version 99"):
        ChipImage.load(_rewrite(src, tmp_path / "c.chip", doc_fn=lambda d: d.update(format_version=99)))
    with pytest.raises(CheckpointError, match="malformed field"):
        ChipImage.load(_rewrite(src, tmp_path / "d.chip", doc_fn=lambda d: d["cores"][0].pop("stride")))


def test_wrong_dtype_refused_even_with_consistent_hash(image, tmp_path):
    src = image.save(tmp_path / "a.chip")

    def widen(doc, members):
        name = "arrays/core0_weights.npy"
        w = np.load(io.BytesIO(members[name])).astype(np.int16) * 3  # out of int8 range too
        members[name] = _npy(w)
        doc["arrays"]["core0_weights"].update(dtype="int16", sha256=hashlib.sha256(members[name]).hexdigest())
        return members

    with pytest.raises(ChipConstraintError) as err:
        ChipImage.load(_rewrite(src, tmp_path / "b.chip", arrays_fn=widen))
    fields = {v.field for v in err.value.violations}
    assert "weights dtype" in fields and "weight value" in fields


def test_recorded_dtype_mismatch_refused(image, tmp_path):
    src = image.save(tmp_path / "a.chip")
    with pytest.raises(CheckpointError, match="has dtype int8"):
        ChipImage.load(_rewrite(src, tmp_path / "b.chip",
                                doc_fn=lambda d: d["arrays"]["core0_weights"].update(dtype="int16")))


def test_limits_checked_on_load(image, tmp_path):
    src = image.save(tmp_path / "a.chip")

    def edit(d):
        d["cores"][0]["threshold_high"] = 40000
        d["cores"][1]["stride"] = [3, 3]

    with pytest.raises(ChipConstraintError) as err:
        ChipImage.load(_rewrite(src, tmp_path / "b.chip", doc_fn=edit))
    fields = {v.field for v in err.value.violations}
    assert {"thresholds", "stride_y", "output_shape"} <= fields


def test_save_refuses_an_invalid_image(image, tmp_path):
    bad = with_core(image, image.output_core, destinations=())
    bad = with_core(bad, 0, threshold_low=5, threshold_high=5)
    with pytest.raises(ChipConstraintError, match="thresholds"):
        bad.save(tmp_path / "x.chip")
    assert not (tmp_path / "x.chip").exists()
