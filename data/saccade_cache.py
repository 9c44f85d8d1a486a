"""The saccade-mnist on-disk cache: its folder format, atomic writing, verification and reading.

The whole set is cached on disk (``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``) in a folder whose
name holds a hash of (generator version, parameters, seed); it is written to a temporary folder
and renamed into place, so a partial cache is never read back. The generator, ``build_cache``
and the :class:`~flexsnn.data.saccade.SaccadeMNIST` dataset that use it live in
:mod:`flexsnn.data.saccade` (this module does not import the generator).

Integrity: ``meta.json`` records the sha256 of each array file and of itself (over its other
keys, canonical JSON). Opening a cache (:func:`verify_cache_folder`, once per process and file
state) checks those hashes, the arrays' dtypes and shapes, and every offset (starts at 0, never
decreases, ends at the event count). A damaged cache is removed with a warning and generated
again (:func:`build_cache`; a limited dataset generates its own samples in memory instead).
Caches written before the hashes existed are checked structurally and then get their hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from flexsnn.data.events import EVENT_DTYPE
from flexsnn.errors import DataError

log = logging.getLogger(__name__)

#: compact on-disk event layout (7 bytes per event)
_STORE_DTYPE = np.dtype([("x", np.uint8), ("y", np.uint8), ("p", np.uint8), ("t", np.int32)])


def default_cache_dir() -> Path:
    """``$FLEXSNN_CACHE`` or ``~/.cache/flexsnn``."""
    env = os.environ.get("FLEXSNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flexsnn"


def _pack(recordings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(recordings) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([r.size for r in recordings])
    store = np.empty(int(offsets[-1]), dtype=_STORE_DTYPE)
    for r, a, b in zip(recordings, offsets[:-1], offsets[1:]):
        for f in ("x", "y", "p", "t"):
            store[f][a:b] = r[f]
    return store, offsets


def write_cache_folder(final: Path, recordings: list[np.ndarray], labels: np.ndarray,
                       meta: dict) -> Path:
    """Write recordings to the cache folder ``final`` atomically and return it.

    Everything goes into a temporary sibling folder (name starting with ``.``), is fsynced, and
    the folder is renamed to ``final`` only when complete, so readers, which look only for
    ``final/meta.json``, never see a partial cache. If another process finished first, its
    folder is kept. On any error the temporary folder is removed.
    """
    store, offsets = _pack(recordings)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        np.save(tmp / "events.npy", store)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        meta = {**meta, "n_samples": len(recordings), "n_events": int(offsets[-1]),
                "sha256": {name: _file_sha256(tmp / name) for name in ARRAY_FILES}}
        (tmp / "meta.json").write_text(_meta_text(meta))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


#: the array files of a cache folder, each hashed in ``meta.json``
ARRAY_FILES = ("events.npy", "offsets.npy", "labels.npy")
#: stat signatures of cache folders verified in this process (hashing 100+ MB once is enough)
_VERIFIED: dict[Path, tuple] = {}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _meta_text(meta: dict) -> str:
    return json.dumps({**meta, "meta_sha256": _meta_digest(meta)}, indent=2, sort_keys=True)


def _signature(folder: Path) -> tuple:
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in
                 ((folder / n).stat() for n in ("meta.json", *ARRAY_FILES)))


def verify_cache_folder(folder: Path) -> dict:
    """Check a cache folder completely and return its ``meta.json`` document.

    Checks the meta document's own hash, each array file's sha256, dtypes and shapes, and
    every offset: ``offsets[0] == 0``, never decreasing, ``offsets[-1] == n_events``; labels in
    0..9. A cache written before hashes were recorded is checked structurally and then gets its
    hashes (written atomically). A folder whose files have not changed since it last passed in
    this process is not hashed again.

    Raises:
        DataError: naming the folder, the file or field, the value and what was expected.
    """
    folder = Path(folder)

    def bad(what: str) -> DataError:
        return DataError(f"saccade-mnist cache {folder}: {what}; it will be generated again "
                         "(or delete it and run `flexsnn data prepare`)")

    try:
        sig = _signature(folder)
    except OSError as err:
        raise bad(f"missing file ({err.strerror}: {Path(err.filename).name})") from err
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise bad(f"meta.json is not readable JSON ({err})") from err
    if _VERIFIED.get(folder) == sig:
        return meta
    if not isinstance(meta, dict):
        raise bad(f"meta.json holds a {type(meta).__name__}, not an object")
    for key in ("n_samples", "n_events"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"meta.json {key}={v!r} is not a count")
    hashes = meta.get("sha256")
    if hashes is not None:
        if meta.get("meta_sha256") != _meta_digest(meta):
            raise bad(f"meta.json meta_sha256={meta.get('meta_sha256')!r} does not match its content "
                      f"({_meta_digest(meta)})")
        for name in ARRAY_FILES:
            got = _file_sha256(folder / name)
            if not isinstance(hashes, dict) or hashes.get(name) != got:
                raise bad(f"{name} sha256 {got} does not match meta.json "
                          f"({hashes.get(name) if isinstance(hashes, dict) else hashes!r})")
    n, n_events = meta["n_samples"], meta["n_events"]
    try:
        events = np.load(folder / "events.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError) as err:  # ValueError: not .npy, or an object (pickle) array
        raise bad(f"an array file is unreadable ({err})") from err
    if events.dtype != _STORE_DTYPE or events.shape != (n_events,):
        raise bad(f"events.npy has dtype {events.dtype} and shape {events.shape}, expected "
                  f"{_STORE_DTYPE} and ({n_events},)")
    if offsets.dtype != np.int64 or offsets.shape != (n + 1,):
        raise bad(f"offsets.npy has dtype {offsets.dtype} and shape {offsets.shape}, expected int64 "
                  f"and ({n + 1},)")
    if offsets[0] != 0:
        raise bad(f"offsets[0]={int(offsets[0])}, expected 0")
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        i = int(drops[0]) + 1
        raise bad(f"offsets[{i}]={int(offsets[i])} is below offsets[{i - 1}]={int(offsets[i - 1])}")
    if offsets[-1] != n_events:
        raise bad(f"offsets[{n}]={int(offsets[-1])}, expected n_events={n_events}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (
            n and (labels.min() < 0 or labels.max() > 9)):
        raise bad(f"labels.npy has dtype {labels.dtype}, shape {labels.shape}, expected {n} "
                  "integers in 0..9")
    if hashes is None:  # written before hashes existed: record them now that it checked out
        from flexsnn.io_utils import atomic_write_text

        meta = {**meta, "sha256": {name: _file_sha256(folder / name) for name in ARRAY_FILES}}
        atomic_write_text(folder / "meta.json", _meta_text(meta))
        log.info("recorded hashes of the saccade-mnist cache %s", folder)
        sig = _signature(folder)
    _VERIFIED[folder] = sig
    return meta


def usable_cache(folder: Path) -> bool:
    """True when ``folder`` holds a complete cache that passes :func:`verify_cache_folder`. A
    damaged one is moved aside and removed (with a warning naming the damage)."""
    if not (folder / "meta.json").is_file():
        return False
    try:
        verify_cache_folder(folder)
        return True
    except DataError as err:
        log.warning("%s", err)
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.damaged.", dir=folder.parent))
    try:
        os.replace(folder, aside / folder.name)
    except OSError:
        pass  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)
    _VERIFIED.pop(folder, None)
    return False


class _CachedStore:
    """Read-only view of a cache folder (events memory-mapped), verified on open."""

    def __init__(self, folder: Path) -> None:
        verify_cache_folder(folder)
        self.events = np.load(folder / "events.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")
        self.labels = np.load(folder / "labels.npy")

    def get(self, i: int) -> np.ndarray:
        s = self.events[self.offsets[i]:self.offsets[i + 1]]
        ev = np.empty(s.shape[0], dtype=EVENT_DTYPE)
        for f in ("x", "y", "p", "t"):
            ev[f] = s[f]
        return ev
