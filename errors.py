"""The one exception tree of flexsnn.

Every error a user can act on derives from :class:`FlexsnnError`. Each subclass stores the
facts it reports as attributes (so callers and tests can inspect them) and builds its message
from them, always with a hint on how to fix the problem. Chain with ``raise ... from err``.
The CLI maps :class:`FlexsnnError` to a one-line message and a non-zero exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


def _rebuild_error(cls: type, args: tuple, state: dict) -> "FlexsnnError":
    """Unpickle a :class:`FlexsnnError` without calling its ``__init__`` (whose signature differs
    per subclass): the message ``args`` and the attributes ``state`` are restored as they were."""
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class FlexsnnError(Exception):
    """Base class of every error flexsnn raises on purpose.

    Picklable with all its attributes, so an error raised in a worker process (a process pool
    of a benchmark or of ``evaluate_dataset``) reaches the parent as itself, not as a
    ``BrokenProcessPool`` from a failed unpickle.
    """

    exit_code: int = 1

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


class ConfigError(FlexsnnError, ValueError):
    """A configuration value is out of range or inconsistent.

    Attributes: ``field`` (dotted name), ``value``, ``expected`` (what is allowed), ``hint``.
    """

    def __init__(self, field: str, value: Any, expected: str, hint: str = "") -> None:
        self.field, self.value, self.expected, self.hint = field, value, expected, hint
        msg = f"{field}={value!r} is invalid: expected {expected}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class DataError(FlexsnnError):
    """A dataset cannot be found or used (missing folder, empty split, unknown name)."""


class EventFormatError(FlexsnnError, ValueError):
    """Events (or an event file) break the event format.

    Attributes: ``source`` (file path or sample name), ``field`` (x, y, p, t or dtype),
    ``index`` (event index, or None), ``value``, ``byte_offset`` (for files, else None),
    ``reason``.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str = "<events>",
        field: str | None = None,
        index: int | None = None,
        value: Any = None,
        byte_offset: int | None = None,
    ) -> None:
        self.reason, self.source, self.field = reason, source, field
        self.index, self.value, self.byte_offset = index, value, byte_offset
        where = [source]
        if byte_offset is not None:
            where.append(f"byte offset {byte_offset}")
        if index is not None:
            where.append(f"event {index}")
        if field is not None:
            where.append(f"field {field!r}")
        if value is not None:
            where.append(f"value {value!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


@dataclass(frozen=True)
class Violation:
    """One broken chip limit.

    ``layer`` is the layer's index in the chip-ready model (or core id for chip images,
    see ``where``), ``layer_type`` its class name, ``field`` the limit's name
    (e.g. ``kernel_size``), ``value`` the offending value, ``limit`` the allowed range as text,
    ``fix`` a concrete suggestion.
    """

    where: str
    field: str
    value: Any
    limit: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field} = {self.value} exceeds limit {self.limit}; fix: {self.fix}"


class ChipConstraintError(FlexsnnError):
    """A model or chip image does not fit the chip. Lists *every* violation at once.

    Attributes: ``violations`` (list of :class:`Violation`), ``chip`` (e.g. "speck2e").
    """

    def __init__(self, violations: Sequence[Violation], chip: str = "speck2e") -> None:
        self.violations = list(violations)
        self.chip = chip
        lines = "\n".join(f"  - {v}" for v in self.violations)
        n = len(self.violations)
        super().__init__(f"{n} {chip} constraint violation{'s' if n != 1 else ''}:\n{lines}")


class CheckpointError(FlexsnnError):
    """A checkpoint or chip-image file is missing, foreign, truncated, tampered or mismatched.

    Attributes: ``path``, ``reason``, ``hint``; ``field`` (the field path, e.g.
    ``cores[0].stride``, or None) and ``value`` (the offending value) when one field is at fault.
    """

    def __init__(self, path: str, reason: str, hint: str = "", *, field: str | None = None,
                 value: Any = None) -> None:
        self.path, self.reason, self.hint = str(path), reason, hint
        self.field, self.value = field, value
        super().__init__(f"{path}: {reason}" + (f". {hint}" if hint else ""))


class BackendUnavailable(FlexsnnError):
    """An optional backend (samna, a devkit, ...) cannot be used here.

    Attributes: ``backend``, ``reason``, ``install_hint``.
    """

    exit_code = 3

    def __init__(self, backend: str, reason: str, install_hint: str = "") -> None:
        self.backend, self.reason, self.install_hint = backend, reason, install_hint
        msg = f"backend {backend!r} unavailable: {reason}"
        super().__init__(msg + (f". {install_hint}" if install_hint else ""))
