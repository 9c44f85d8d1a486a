"""Atomic file writes and run provenance.

Every result, cache and checkpoint file in flexsnn is written through these helpers: the data
goes to a temporary file in the same folder, is flushed and fsynced, then ``os.replace``d over
the target, so a reader never sees a partial file and an interruption loses nothing old.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import flexsnn

#: Fault-injection hook for tests: called as ``hook(point, target)`` at each commit point of a
#: write (``"replace"``: the data is in the temporary file, just before it replaces the target).
#: A test sets it to a function that ends the process (``os._exit``) to simulate a kill there.
FAULT_HOOK: "Callable[[str, Path], None] | None" = None


def fault_point(point: str, target: Path) -> None:
    """Run :data:`FAULT_HOOK` (if set) at a named commit point; a no-op in normal runs."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(point, target)


def _default_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` would have given a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Example::

        with atomic_path("out.npz") as tmp:
            np.savez(tmp, a=a)   # write to tmp (keep its suffix)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; outputs are ordinary files
        fault_point("replace", target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_distinct_paths(inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Refuse, before any work, an output path that is an input or another output.

    ``inputs`` and ``outputs`` map a name for messages (an option such as ``--onnx``) to a path
    or None (skipped). Paths are compared after resolving ``..`` and symlinks.

    Raises:
        ConfigError: naming both options and the path.
    """
    from flexsnn.errors import ConfigError

    def key(p: Any) -> str:
        return os.path.normcase(str(Path(p).expanduser().resolve()))

    seen: dict[str, tuple[str, bool]] = {}
    for name, p in inputs.items():
        if p is not None:
            seen.setdefault(key(p), (name, True))
    for name, p in outputs.items():
        if p is None:
            continue
        k = key(p)
        if k in seen:
            other, is_input = seen[k]
            what = f"the input {other}" if is_input else f"the output {other}"
            raise ConfigError(name, str(p), f"a path other than {what}",
                              f"writing it would {'destroy the input' if is_input else 'overwrite the other output'}; "
                              "choose another file name")
        seen[k] = (name, False)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """JSON text of ``obj`` (dataclasses, numpy and paths allowed), indented, sorted keys."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return atomic_write_text(path, to_json(obj))


#: Paths whose changes do not make a result's source "dirty": the results themselves.
_NOT_SOURCE = ("benchmarks/results",)


def git_hash(root: str | os.PathLike[str] | None = None) -> str | None:
    """Commit hash of the flexsnn source tree (``root``: another checkout), with ``+dirty``
    appended when its files differ from that commit (modified, staged or untracked, ignoring
    ``benchmarks/results/``), so that a result measured on uncommitted code says so; None
    outside a git checkout."""
    cwd = Path(root) if root is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", ".", *(f":(exclude){p}" for p in _NOT_SOURCE))
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"{head}+dirty" if changed else head


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, torch version and date: the ``machine`` key of benchmark results."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch_version = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "torch": torch_version,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance(config: Any = None) -> dict[str, Any]:
    """What to write next to every output: resolved config, flexsnn version, git hash, machine."""
    return {
        "flexsnn_version": flexsnn.__version__,
        "git_hash": git_hash(),
        "machine": machine_info(),
        "config": config,
    }
