import json
import os
import stat

import pytest

from flexsnn.io_utils import atomic_path, atomic_write_json, git_hash, provenance


def test_atomic_write_json_round_trip_and_normal_permissions(tmp_path):
    path = atomic_write_json(tmp_path / "out" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_provenance_has_version_and_config():
    info = provenance({"x": 1})
    assert info["config"] == {"x": 1} and info["flexsnn_version"]
    assert {"cores", "cpu", "torch", "date"} <= set(info["machine"])


def test_git_hash_marks_uncommitted_source_but_not_results(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "mod.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_hash(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"a": 1}\n')  # a result rewritten
    (tmp_path / "benchmarks" / "results" / "new.json").write_text("{}\n")
    assert git_hash(tmp_path) == clean
    (tmp_path / "helper.py").write_text("y = 2\n")  # new source not yet committed
    assert git_hash(tmp_path) == clean + "+dirty"
    (tmp_path / "helper.py").unlink()
    (tmp_path / "mod.py").write_text("x = 2\n")
    assert git_hash(tmp_path) == clean + "+dirty"
    assert git_hash(tmp_path / "missing") is None  # not a checkout
