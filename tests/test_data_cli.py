"""`flexsnn data prepare | info | show`: exit codes, messages, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexsnn.cli import main
from flexsnn.data.events import make_events
from flexsnn.data.nmnist import write_bin


@pytest.fixture
def fake_nmnist(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "nm"
    for d in range(10):
        for k in range(3):
            n = 40
            ev = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n),
                             np.sort(rng.integers(0, 300_000, n)))
            write_bin(root / "Train" / str(d) / f"{d * 10 + k + 1:05d}.bin", ev)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXSNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FLEXSNN_NMNIST_ROOT", raising=False)


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "prepare", "--help"],
                                  ["data", "info", "--help"], ["data", "show", "--help"]])
def test_help_everywhere_has_example(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "flexsnn data" in out


def test_info_nmnist_folder(fake_nmnist, capsys):
    assert main(["data", "info", "--dataset", "nmnist", "--root", str(fake_nmnist),
                 "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "30 samples" in out and "0:3" in out and "events/sample: mean 40" in out


def test_prepare_nmnist_writes_summary(fake_nmnist, tmp_path, capsys):
    out_json = tmp_path / "prep.json"
    assert main(["data", "prepare", "--dataset", "nmnist", "--root", str(fake_nmnist),
                 "--out", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert res["datasets"]["train"]["samples"] + res["datasets"]["test"]["samples"] == 30
    assert "git_hash" in res and res["config"]["dataset"] == "nmnist"


def test_nmnist_without_root_is_clear_error(capsys):
    assert main(["data", "info", "--dataset", "nmnist"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--root" in err and "--download" in err


def test_missing_root_folder(tmp_path, capsys):
    assert main(["data", "info", "--dataset", "nmnist", "--root", str(tmp_path / "x")]) == 1
    assert "no N-MNIST folder" in capsys.readouterr().err


def test_unknown_dataset(capsys):
    assert main(["data", "info", "--dataset", "cifar"]) == 1
    assert "unknown dataset 'cifar'" in capsys.readouterr().err


def test_corrupt_file_reported_with_offset(fake_nmnist, capsys):
    bad = next((fake_nmnist / "Train" / "3").glob("*.bin"))
    bad.write_bytes(bad.read_bytes()[:-3])
    assert main(["data", "info", "--dataset", "nmnist", "--root", str(fake_nmnist),
                 "--split", "all"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "byte offset" in err


def test_show_frames_and_raster(tmp_path, fake_nmnist, capsys):
    png = tmp_path / "f.png"
    assert main(["data", "show", "--n", "2", "--T", "3", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    png2 = tmp_path / "r.png"
    assert main(["data", "show", "--dataset", "nmnist", "--root", str(fake_nmnist),
                 "--kind", "raster", "--n", "2", "--out", str(png2)]) == 0
    assert png2.stat().st_size > 1000
    assert not (tmp_path / "cache").exists()  # a few samples never build the whole cache


def test_show_bad_kind(capsys):
    assert main(["data", "show", "--kind", "movie"]) == 1
    assert "--kind" in capsys.readouterr().err
