"""The run folder of a training run: crash-safe epoch commits, resume state, metrics files.

Layout of ``out_dir`` (see also the README's reliability notes)::

    run.json                       pointer to the committed epoch: the commit point
    epochs/0003/last.safetensors   raw weights after epoch 3 (+ last.json sidecar)
    epochs/0003/state.safetensors  optimizer, scheduler, RNG states, history (+ state.json)
    last.safetensors, last.json    hard links to the committed epoch's files (for users;
    state.safetensors, state.json  repaired on resume)
    metrics.jsonl, metrics.csv     one row per epoch (rebuilt from the committed history on resume)
    config.json, final.safetensors (+ final.json)

Commit protocol of one epoch (:meth:`RunFolder.commit_epoch`): the four files are written
(each atomically) into a new folder ``epochs/NNNN``; then ``run.json`` is replaced atomically
to point at it; only then are the top-level links replaced and older epoch folders removed.
A kill at any instant therefore leaves either the previous or the new epoch committed, and
``--resume`` continues from it (:meth:`RunFolder.committed`). Folders written before
``run.json`` existed (top-level ``last``/``state`` only) still resume.

Every write point calls :func:`flexsnn.io_utils.fault_point`, so a test can end the process at
each of them (by injection, not timing) and check that the resumed run is identical.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.io_utils import atomic_write_json, atomic_write_text, fault_point

log = logging.getLogger(__name__)

STATE_KIND = "flexsnn-train-state"
RUN_KIND = "flexsnn-run"
POINTER = "run.json"
EPOCHS_DIR = "epochs"
#: the committed epoch's files, published at the top level too (weights before their sidecar)
PUBLISHED = ("last.safetensors", "last.json", "state.safetensors", "state.json")
#: every file a training run writes at the top level of its folder (``--overwrite`` removes them)
RUN_FILES = (POINTER, *PUBLISHED, "final.safetensors", "final.json", "metrics.jsonl", "metrics.csv",
             "config.json")


# =========================================================================== run folder
class RunFolder:
    """The output folder of one training run (only the main rank writes into it)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out = Path(out_dir)

    # ----------------------------------------------------------------- what is there
    def describe_run(self) -> str | None:
        """A short description of the run this folder holds (``None``: no run, or only files
        of a run killed before its first epoch was committed)."""
        final = self.out / "final.safetensors"
        committed = self.committed_epoch()
        if final.is_file():
            epochs = f", {committed} epochs" if committed and committed > 0 else ""
            return f"a finished run ({final.name}{epochs})"
        if committed == -1:
            return "a run whose resume files are damaged"
        if committed:
            return f"an interrupted run (epoch {committed} committed)"
        return None

    def was_started(self) -> bool:
        """True when a run began writing here (``config.json`` or a killed write's temp file)."""
        return (self.out / "config.json").is_file() or bool(_temp_files(self.out))

    def committed_epoch(self) -> int | None:
        """Number of the committed epoch; None when there is none, -1 when the pointer or the
        state sidecar is damaged (still a run: never replaced without ``--overwrite``)."""
        try:
            found = self.committed()
        except CheckpointError:
            return -1  # damaged pointer: still a run, never silently overwritten
        if found is None:
            return None
        if found[2] is not None:
            return found[2]
        try:
            return int(json.loads(found[1].with_suffix(".json").read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def committed(self) -> tuple[Path, Path, int | None] | None:
        """``(last weights, state weights, epoch)`` of the committed epoch, or None.

        Reads ``run.json``; a folder from before the pointer existed falls back to the
        top-level ``last``/``state`` pair (epoch None: read it from the state).

        Raises:
            CheckpointError: ``run.json`` is damaged or names files that are missing.
        """
        pointer = self.out / POINTER
        if pointer.is_file():
            try:
                doc = json.loads(pointer.read_text(encoding="utf-8"))
                epoch, rel = doc["epoch"], doc["dir"]
                if doc.get("kind") != RUN_KIND or not isinstance(epoch, int) or not isinstance(rel, str):
                    raise ValueError(f"kind {doc.get('kind')!r}, epoch {epoch!r}, dir {rel!r}")
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(pointer, f"damaged run pointer ({err})",
                                      "restart the run with --overwrite") from err
            folder = self.out / rel
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise CheckpointError(pointer, f"dir={rel!r} points outside the run folder",
                                      "restart the run with --overwrite")
            last, state = folder / "last.safetensors", folder / "state.safetensors"
            for p in (last, state):
                if not p.is_file():
                    raise CheckpointError(p, "the committed epoch's file is missing",
                                          "restart the run with --overwrite")
            return last, state, epoch
        last, state = self.out / "last.safetensors", self.out / "state.safetensors"
        if state.is_file() and last.is_file():
            return last, state, None
        return None

    # ----------------------------------------------------------------- before training
    def prepare(self, *, resume: bool, overwrite: bool,
                is_main: bool = True) -> tuple[Path, Path, int | None] | None:
        """Check the folder before any work starts, tidy it, and return what to resume from.

        Without ``resume`` a folder holding a run is refused unless ``overwrite``, which removes
        that run's files (:data:`RUN_FILES`, ``epochs/``; nothing else); returns None. With
        ``resume``, temporary files of a killed write and epoch folders that were never
        committed are removed, the top-level links are repaired, and :meth:`committed` is
        returned (None: the run was killed before its first commit and starts again).

        Raises:
            ConfigError: ``--resume`` together with ``--overwrite``, or a run would be replaced.
            CheckpointError: ``resume`` into a folder where no run started, or a damaged pointer.
        """
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError("--out", str(self.out), "a folder", "a regular file has this name")
        if resume and overwrite:
            raise ConfigError("--overwrite", True, "not together with --resume",
                              "--resume continues the run in --out, --overwrite starts it again")
        if not resume:
            held = self.describe_run()
            if held is not None and not overwrite:
                raise ConfigError("--out", str(self.out), "a folder without a training run",
                                  f"it holds {held}: pass --resume to continue it or --overwrite "
                                  "to replace it (or choose another --out)")
            if overwrite and is_main and self.out.is_dir():
                self._remove_run()
            return None
        found = self.committed()
        if found is None:
            if not self.was_started():
                raise CheckpointError(self.out / "state.safetensors", "no resume state in the output folder",
                                      "run without --resume, or point --out at the interrupted run")
            log.warning("%s: killed before its first epoch was committed; starting at epoch 1", self.out)
        if is_main:
            self._tidy(found)
        return found

    def _remove_run(self) -> None:
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / EPOCHS_DIR, ignore_errors=True)
        for tmp in _temp_files(self.out):
            tmp.unlink(missing_ok=True)

    def _tidy(self, found: tuple[Path, Path, int | None] | None) -> None:
        keep = found[0].parent if found is not None and found[2] is not None else None
        for tmp in _temp_files(self.out):
            tmp.unlink(missing_ok=True)
        epochs = self.out / EPOCHS_DIR
        if epochs.is_dir():
            for d in epochs.iterdir():
                if keep is None or d.resolve() != keep.resolve():
                    shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        if keep is not None:
            self._publish(keep)

    # ----------------------------------------------------------------- after each epoch
    def commit_epoch(self, epoch: int, write_last: Callable[[Path], Any],
                     write_state: Callable[[Path], Any]) -> Path:
        """Commit epoch ``epoch`` (see the module docstring); returns its folder.

        ``write_last(path)`` / ``write_state(path)`` write the two-file checkpoints (weights
        ``path``, sidecar ``path.with_suffix(".json")``).
        """
        folder = self.out / EPOCHS_DIR / f"{epoch:04d}"
        if folder.exists():  # a killed, uncommitted attempt at this epoch
            found = self.committed()
            if found is not None and found[0].parent.resolve() == folder.resolve():
                raise CheckpointError(folder, "refusing to rewrite the committed epoch",
                                      "this is a bug: resume should have started after it")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        write_last(folder / "last.safetensors")
        write_state(folder / "state.safetensors")
        atomic_write_json(self.out / POINTER, {"kind": RUN_KIND, "epoch": epoch,
                                               "dir": f"{EPOCHS_DIR}/{folder.name}"})
        self._publish(folder)
        for d in (self.out / EPOCHS_DIR).iterdir():
            if d != folder:
                fault_point("prune", d)
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        return folder

    def _publish(self, folder: Path) -> None:
        """Replace the top-level ``last.*``/``state.*`` by links to ``folder``'s files."""
        for name in PUBLISHED:
            _link_replace(folder / name, self.out / name)


def _temp_files(folder: Path) -> list[Path]:
    """Temporary files :func:`flexsnn.io_utils.atomic_path` leaves when killed (``.NAME.*.tmp*``)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.glob(".*.tmp*") if p.is_file()]


def _link_replace(source: Path, target: Path) -> None:
    """Atomically make ``target`` the same file as ``source`` (a hard link; a copy where the
    file system has none). Nothing happens when it already is (renaming one link of a file
    over another link of the same file is a no-op that would leave the temporary name)."""
    if target.is_file() and os.path.samefile(source, target):
        return
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        fault_point("replace", target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# =========================================================================== resume state
def _split_optimizer_state(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, st in opt_state["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
                entry[k] = {"tensor": f"optim.{pid}.{k}"}
            else:
                entry[k] = v
        plain["state"][str(pid)] = entry
    return tensors, plain


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for pid, entry in plain["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def _rng_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    doc = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
           "python": [py[0], list(py[1]), py[2]]}
    return tensors, doc


def _set_rng_states(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n = doc["numpy"]
    np.random.set_state((n[0], tensors["rng.numpy_keys"].numpy().astype(np.uint32), n[1], n[2], n[3]))
    p = doc["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_train_state(path: Path, *, optimizer, scheduler, scaler, epoch: int, global_step: int,
                     history: list[dict[str, Any]], config: Any) -> Path:
    """Write the resume state (safetensors + JSON, no pickle) atomically; ``config`` is the
    run's ``TrainConfig``."""
    from flexsnn.models.checkpoint import save_tensors

    opt_tensors, opt_plain = _split_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_doc = _rng_states()
    doc = {"kind": STATE_KIND, "epoch": epoch, "global_step": global_step, "optimizer": opt_plain,
           "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
           "rng": rng_doc, "history": history, "config": config.to_dict()}
    json.dumps(doc)  # fail early (and clearly) on anything not JSON-serialisable
    return save_tensors(path, {**opt_tensors, **rng_tensors}, doc)


def load_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, document)`` of a resume state written by :func:`save_train_state`."""
    from flexsnn.models.checkpoint import load_tensors

    return load_tensors(path, kind=STATE_KIND)


# =========================================================================== metrics files
def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` atomically from the full history (called
    after every commit and on resume, so a row lost by a kill comes back)."""
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in history:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
