"""Static image datasets (data/images.py), direct encoding, presets and a static training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flexsnn.data.images import (
    ImageDataset, frames_for, load_cifar, load_image_dataset, load_image_folder, load_mnist, read_cifar_bin,
)
from flexsnn.errors import ConfigError, DataError


def _write_cifar10(root, n_train=6, n_test=4, seed=0):
    """The binary CIFAR-10 layout with a few records: label byte + R, G, B planes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    truth = {}
    for name, n in [(f"data_batch_{i}.bin", n_train) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        truth[name] = (labels, pixels.reshape(n, 3, 32, 32))
    return truth


def test_cifar10_binary_round_trip_and_frames(tmp_path):
    truth = _write_cifar10(tmp_path)
    train = load_cifar("cifar10", tmp_path, "train")
    test = load_image_dataset("cifar10", split="test", root=tmp_path)
    assert len(train) == 30 and len(test) == 4 and train.input_shape == (3, 32, 32)
    img, label = test[2]
    labels, pixels = truth["test_batch.bin"]
    assert label == int(labels[2]) and np.array_equal(img, pixels[2])
    x, y = frames_for(test, T=5)[2]                       # direct encoding: one normalised frame
    mean = np.array([0.4914, 0.4822, 0.4465]).reshape(3, 1, 1)
    std = np.array([0.2470, 0.2435, 0.2616]).reshape(3, 1, 1)
    assert x.shape == (1, 3, 32, 32) and int(y) == label
    np.testing.assert_allclose(x[0].numpy(), (pixels[2] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)


def test_cifar100_binary_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rec = np.zeros((3, 3074), np.uint8)
    rec[:, 0] = [1, 2, 3]          # coarse
    rec[:, 1] = [55, 7, 99]        # fine
    for f in ("train.bin", "test.bin"):
        (folder / f).write_bytes(rec.tobytes())
    ds = load_cifar("cifar100", tmp_path, "test")
    assert ds.labels.tolist() == [55, 7, 99] and ds.num_classes == 100


def test_cifar_errors_name_the_file_and_the_fix(tmp_path):
    _write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-100])                 # truncated
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*byte offset 15365"):
        load_cifar("cifar10", tmp_path, "train")
    with pytest.raises(DataError, match="--download"):
        load_cifar("cifar10", tmp_path / "nothing", "train")
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match="pickle"):
        load_cifar("cifar10", tmp_path / "py", "train")
    with pytest.raises(DataError, match="--root"):
        load_image_dataset("cifar10", split="train")
    with pytest.raises(DataError, match="imagenet cannot be downloaded"):
        load_image_dataset("imagenet", root=tmp_path, download=True)
    with pytest.raises(DataError, match="split"):
        load_mnist("valid")
    from flexsnn.data.registry import load_dataset, load_event_dataset

    with pytest.raises(DataError, match="static image dataset"):
        load_event_dataset("mnist")
    assert len(load_dataset("cifar10", split="test", root=tmp_path)) == 4
    with pytest.raises(DataError):
        read_cifar_bin(tmp_path / "missing.bin", label_bytes=1)


def test_image_folder_imagenet_layout_and_corrupt_file(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    ds = load_image_dataset("imagenet", split="test", root=tmp_path)   # test -> val/
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1]
    img, _ = ds[3]
    assert img.shape == (3, 224, 224) and img.dtype == np.uint8
    (tmp_path / "train" / "n02" / "1.JPEG").write_bytes(b"not a jpeg")
    train = load_image_folder("imagenet", tmp_path, "train")
    with pytest.raises(DataError, match=r"1\.JPEG.*cannot decode"):
        train[3]
    with pytest.raises(DataError, match="no folder"):
        load_image_folder("imagenet", tmp_path / "x", "train")


def test_mnist_split_and_direct_encoding_is_exact():
    """One frame through the input TTM equals the image repeated at every step."""
    from flexsnn.models.zoo import build_model

    train, test = load_mnist("train", limit=20), load_mnist("test", limit=10)
    assert len(train) == 20 and len(test) == 10 and train.input_shape == (1, 28, 28)
    assert set(train.labels.tolist()) == set(range(10))
    assert not set(load_mnist("test").labels.tolist()) - set(range(10))
    torch.manual_seed(0)
    model = build_model("resnet19", width=2, in_channels=1, image_size=28).eval()
    x = torch.stack([frames_for(test, 3)[i][0] for i in range(4)], 1)    # [1, B, 1, 28, 28]
    model.set_temporal_config((3, 2, 3, 1, 2, 3, 3, 2))
    with torch.no_grad():
        a = model(x)                                          # a sampled MTT configuration: t_1 = 3 copies
        model.set_temporal_config((3,) * 8)
        c = model(x)
        d = model(x.expand(3, -1, -1, -1, -1).contiguous())
    torch.testing.assert_close(c, d)                          # direct encoding == the image at every step
    assert a.shape == (2, 4, 10)
    with pytest.raises(ConfigError):
        ImageDataset("mnist", np.zeros(2))


def test_presets_resolve_and_static_defaults(tmp_path):
    from flexsnn.commands.train import resolve_train_config
    from flexsnn.training.presets import PRESETS, get_preset

    for name in PRESETS:
        cfg = resolve_train_config(None, {}, {}, preset=name)
        assert cfg.dataset == PRESETS[name]["config"]["dataset"]
        if cfg.dataset in ("cifar10", "cifar100", "mnist", "imagenet"):
            assert cfg.scheme.data_kind == "static" and cfg.model_kwargs["in_channels"] in (1, 3)
    c100 = resolve_train_config(None, {"epochs": 2}, {}, preset="cifar100-resnet19")
    assert c100.epochs == 2 and c100.model_kwargs["num_classes"] == 100 and c100.scheme.t_range == (1, 6)
    assert c100.optimizer == "sgd" and c100.lr == 0.1 and c100.weight_decay == 5e-4 and c100.batch_size == 256
    mn = resolve_train_config(None, {"dataset": "mnist", "model": "resnet18"}, {"name": "mtt"})
    assert mn.scheme.data_kind == "static" and mn.model_kwargs == {"in_channels": 1, "image_size": 28,
                                                                   "num_classes": 10}
    with pytest.raises(ConfigError, match="preset"):
        get_preset("cifar11")


@pytest.mark.slow
def test_static_training_run_and_eval_via_cli(tmp_path, capsys):
    from flexsnn.cli import main

    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--model", "resnet19", "--model-kwargs", '{"width": 2}',
                 "--T", "2", "--scheme", "mtt", "--s", "2", "--epochs", "1", "--limit", "32", "--test-limit", "20",
                 "--batch-size", "16", "--augment", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["scheme"]["data_kind"] == "static" and cfg["model_kwargs"]["in_channels"] == 1
    assert main(["eval", "-c", str(run / "final.safetensors"), "--T", "1-3", "--limit", "20",
                 "--out", str(tmp_path / "ev")]) == 0
    rep = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert rep["dataset"] == "mnist" and set(next(iter(rep["checkpoints"].values()))["accuracy_per_T"]) == {"1", "2", "3"}
    assert main(["train", "--list-presets"]) == 0
    assert "cifar10-resnet19" in capsys.readouterr().out


@pytest.mark.slow
def test_static_mtt_benchmark_smoke(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(repo / "benchmarks" / "static_mtt.py"), "--smoke", "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    doc = json.loads((tmp_path / "static_mtt_smoke.json").read_text())
    assert doc["T_train"] == 2 and set(doc["accuracy"]) == {"sdt", "mtt"}
    assert set(doc["accuracy"]["mtt"]) == {"1", "2", "3", "4"} and "machine" in doc
    run = doc["per_seed"]["0"]
    assert set(run["test_acc_per_epoch"]) == {"sdt", "mtt"} and len(run["test_acc_per_epoch"]["mtt"]) == 1
    gap = doc["mtt_minus_sdt_below_T_train_per_seed"]["0"]
    assert doc["mtt_minus_sdt_below_T_train_spread"]["mean"] == pytest.approx(gap)
    assert gap == pytest.approx(run["accuracy"]["mtt"]["1"] - run["accuracy"]["sdt"]["1"])  # T < 2: T = 1 only
    assert doc["idle_estimate_seconds"]["1"] == pytest.approx(sum(run["cpu_seconds"].values()))


@pytest.mark.parametrize("backprop", ["bptt", "rate_M", "rate_S"])
def test_paper_lif_static_training_step_every_loss_and_backprop(backprop):
    """A paper-lif net on direct-encoded images trains with BPTT and both rate modes, CE/TET/TMC,
    at a mixed (MTT) configuration: finite loss, gradients on every parameter."""
    from flexsnn.models.zoo import build_model
    from flexsnn.training.losses import build_loss
    from flexsnn.training.trainer import get_step_fn, train_step

    frames = frames_for(load_mnist("train", limit=10), T=3)
    x = torch.stack([frames[i][0] for i in range(8)], 1)        # [1, B, 1, 28, 28]: one frame per image
    y = torch.stack([frames[i][1] for i in range(8)])
    for loss in ("ce", "tet", "tmc"):
        torch.manual_seed(0)
        model = build_model("convnet", width=4).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        stats = train_step(model, x, y, [(3, 2, 1), (1, 3, 3)], build_loss(loss), get_step_fn(backprop), opt)
        assert stats.seen == 16 and np.isfinite(stats.loss_sum)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.dim() > 1)
