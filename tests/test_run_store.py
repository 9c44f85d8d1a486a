"""Training-run durability: a kill at each write point resumes to bitwise-identical weights;
metrics rebuilt on resume; a folder holding a run needs --resume or --overwrite."""

from __future__ import annotations

import json
import os

import pytest
import torch

import flexsnn.io_utils as io_utils
from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.models.checkpoint import load_checkpoint
from flexsnn.training.run_store import POINTER, RunFolder
from flexsnn.training.schemes import SchemeConfig
from flexsnn.training.trainer import TrainConfig, train

KILLED = 77


@pytest.fixture(scope="module")
def tiny_data():
    from flexsnn.data.registry import load_event_dataset

    return (load_event_dataset("saccade-mnist", split="train", limit=8, seed=0),
            load_event_dataset("saccade-mnist", split="test", limit=4, seed=0))


@pytest.fixture()
def one_thread():
    """Bitwise comparisons across processes: the same (single) intra-op thread everywhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> TrainConfig:
    base = dict(T=2, scheme=SchemeConfig(name="mtt", T=2, s=2), epochs=2, batch_size=4, lr=3e-3,
                augment=True, seed=5, model_kwargs={"T": 2}, device="cpu", bn_calibration_batches=0)
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg, out, data, **kw):
    return train(cfg, out_dir=out, train_data=data[0], test_data=data[1], **kw)


def _killed_at(k: int, cfg, out, data) -> None:
    """Train in a forked child that ends itself (os._exit, like SIGKILL: no cleanup runs) at
    the ``k``-th write point."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            torch.set_num_threads(1)
            seen = [0]

            def hook(point, target):
                if seen[0] == k:
                    os._exit(KILLED)
                seen[0] += 1

            io_utils.FAULT_HOOK = hook
            _run(cfg, out, data)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == KILLED, f"write point {k} was not reached"


def _temp_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp*"))


@pytest.mark.slow
def test_kill_at_each_write_point_resumes_to_identical_weights(tmp_path, tiny_data, one_thread):
    cfg = _cfg()
    points: list[tuple[str, str]] = []
    io_utils.FAULT_HOOK = lambda point, target: points.append((point, target.name))
    try:
        ref = _run(cfg, tmp_path / "ref", tiny_data)
    finally:
        io_utils.FAULT_HOOK = None
    ref_weights, _ = load_checkpoint(tmp_path / "ref" / "final.safetensors")
    names = [name for _, name in points]
    # every file of the commit protocol is a write point, for both epochs
    for name in ("config.json", "last.safetensors", "last.json", "state.safetensors", "state.json",
                 POINTER, "metrics.jsonl", "metrics.csv", "final.safetensors", "final.json"):
        assert name in names, name
    assert names.count(POINTER) == 2 and ("prune", "0001") in points
    for k, point in enumerate(points):
        out = tmp_path / f"kill{k:02d}"
        _killed_at(k, cfg, out, tiny_data)
        res = _run(cfg, out, tiny_data, resume=True)
        got, meta = load_checkpoint(out / "final.safetensors")
        assert meta.epoch == 2
        for key in ref_weights:
            assert torch.equal(got[key], ref_weights[key]), (point, key)
        assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in ref.history], point
        assert _temp_files(out) == [], point
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 2, point
        assert (out / "metrics.csv").read_text().count("\n") == 3, point
        assert sorted(p.name for p in (out / "epochs").iterdir()) == ["0002"], point
        # the published pair is consistent again (loads, hash checked) and matches the commit
        last, last_meta = load_checkpoint(out / "last.safetensors")
        assert last_meta.epoch == 2, point


def test_kill_while_metrics_csv_is_replaced_loses_no_row(tmp_path, tiny_data, one_thread):
    cfg = _cfg()
    points: list[str] = []
    io_utils.FAULT_HOOK = lambda point, target: points.append(target.name)
    try:
        _run(cfg, tmp_path / "ref", tiny_data)
    finally:
        io_utils.FAULT_HOOK = None
    k = len(points) - 1 - points[::-1].index("metrics.csv")  # the second epoch's csv
    out = tmp_path / "run"
    _killed_at(k, cfg, out, tiny_data)
    assert (out / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1: a row behind
    assert [p for p in _temp_files(out) if p.startswith(".metrics.csv.")]  # the killed write's file
    _run(cfg, out, tiny_data, resume=True)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith("2,")
    assert _temp_files(out) == []


@pytest.mark.slow
def test_folder_with_a_run_needs_resume_or_overwrite(tmp_path, tiny_data):
    cfg = _cfg(epochs=1)
    out = tmp_path / "run"
    _run(cfg, out, tiny_data)
    final = (out / "final.safetensors").read_bytes()
    with pytest.raises(ConfigError) as info:
        _run(cfg, out, tiny_data)
    msg = str(info.value)
    assert info.value.field == "--out" and "finished run" in msg and "--resume" in msg and "--overwrite" in msg
    assert (out / "final.safetensors").read_bytes() == final  # untouched
    with pytest.raises(ConfigError, match="--overwrite"):
        _run(cfg, out, tiny_data, resume=True, overwrite=True)
    (out / "notes.txt").write_text("mine")
    _run(_cfg(epochs=1, seed=6), out, tiny_data, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 6
    # a regular file as --out is refused by name
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="a regular file"):
        _run(cfg, tmp_path / "file", tiny_data)


def test_interrupted_run_is_refused_without_resume(tmp_path):
    out = tmp_path / "run"
    (out / "epochs" / "0001").mkdir(parents=True)
    for name in ("last.safetensors", "state.safetensors"):
        (out / "epochs" / "0001" / name).write_bytes(b"x")
    (out / POINTER).write_text(json.dumps({"kind": "flexsnn-run", "epoch": 1, "dir": "epochs/0001"}))
    store = RunFolder(out)
    assert store.describe_run() == "an interrupted run (epoch 1 committed)"
    with pytest.raises(ConfigError, match="interrupted run"):
        store.prepare(resume=False, overwrite=False)
    (out / POINTER).write_text('{"kind": "flexsnn-run", "epoch": 1, "dir": "../elsewhere"}')
    with pytest.raises(CheckpointError, match="outside the run folder"):
        store.committed()
    (out / POINTER).write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged run pointer"):
        store.prepare(resume=True, overwrite=False)
    with pytest.raises(ConfigError):  # a damaged run is still a run: never silently replaced
        store.prepare(resume=False, overwrite=False)
    with pytest.raises(CheckpointError, match="no resume state"):
        RunFolder(tmp_path / "empty").prepare(resume=True, overwrite=False)


def test_cli_train_into_a_finished_run_is_refused_before_work(tmp_path, capsys):
    from flexsnn.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "final.safetensors").write_bytes(b"weights")
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out='{out}'" in err and "finished run" in err and "--resume" in err and "--overwrite" in err
    assert main(["train", "--resume", "--overwrite", "--out", str(out)]) == 1
    assert "--overwrite=True" in capsys.readouterr().err
    assert (out / "final.safetensors").read_bytes() == b"weights"
