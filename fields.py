"""Strict reading of JSON documents (chip images, checkpoint sidecars, config files).

Every value is checked for its exact JSON type before use: an int is an ``int`` (not a float,
a bool or a string), a tuple has its length, an enum holds a known value and a number stays
within bounds, so a 5,000-digit integer or ``"leak_enabled": "no"`` is refused instead of
being used. Each failure names the file, the field path (``cores[0].stride``), the value and
a fix, as a :class:`~flexsnn.errors.CheckpointError` (files flexsnn wrote) or a
:class:`~flexsnn.errors.ConfigError` (files a user writes).

:func:`canonical_sha256` is the hash that covers a whole JSON document.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence

from flexsnn.errors import CheckpointError, ConfigError

#: Bounds of any integer field unless a tighter one is given (int64).
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def canonical_json(doc: Any) -> bytes:
    """The canonical UTF-8 JSON of ``doc``: sorted keys, no spaces, ASCII only."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def canonical_sha256(doc: dict[str, Any], *, exclude: str) -> str:
    """sha256 (hex) of ``doc``'s canonical JSON without its key ``exclude`` (the hash itself)."""
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != exclude})).hexdigest()


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 5,000-digit integer stays readable)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 12] + f"...({len(text)} chars)"


def json_loads(data: bytes | str, source: str | Path, *, config: bool = False, allow_nan: bool = False) -> Any:
    """``json.loads`` whose every failure (syntax, encoding, huge integers, and NaN/Infinity
    unless ``allow_nan``) is a named error."""
    def reject(obj: str) -> float:
        raise ValueError(f"non-standard JSON constant {obj}")

    try:
        return json.loads(data, parse_constant=None if allow_nan else reject)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # JSONDecodeError is a ValueError
        reason = f"not valid JSON ({type(err).__name__}: {short(str(err), 160)})"
        if config:
            raise ConfigError(str(source), "<file>", "a readable JSON object", reason) from err
        raise CheckpointError(source, reason, "the file is damaged; re-create it") from err


class FieldReader:
    """Typed access to one JSON document; every failure raises a named error.

    Args:
        source: the file (for messages).
        hint: the fix appended to every message (e.g. "re-export it with `flexsnn export`").
        config: raise :class:`ConfigError` (user-written files) instead of :class:`CheckpointError`.
    """

    def __init__(self, source: str | Path, hint: str, *, config: bool = False) -> None:
        self.source, self.hint, self.config = str(source), hint, config

    def fail(self, field: str, value: Any, expected: str) -> NoReturn:
        """Raise the named error for ``field`` = ``value`` (expected ``expected``)."""
        if self.config:
            raise ConfigError(f"{self.source}: {field}", _Short(value), expected, self.hint)
        raise CheckpointError(self.source, f"field {field} = {short(value)} is invalid: expected {expected}",
                              self.hint, field=field, value=value)

    # ---- containers ------------------------------------------------------------------------
    def obj(self, value: Any, field: str, *, required: Iterable[str] = (), optional: Iterable[str] = (),
            extra_ok: bool = False) -> dict[str, Any]:
        """A JSON object with every ``required`` key and (unless ``extra_ok``) no unknown key."""
        if not isinstance(value, dict):
            self.fail(field, value, "a JSON object")
        req = list(required)
        missing = [k for k in req if k not in value]
        if missing:
            self.fail(f"{field}.{missing[0]}" if field else missing[0], "<missing>", "a value (the field is required)")
        if not extra_ok:
            known = set(req) | set(optional)
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                self.fail(f"{field}.{unknown[0]}" if field else unknown[0], value[unknown[0]],
                          f"no such field (known: {', '.join(sorted(known))})")
        return value

    def list(self, value: Any, field: str, *, length: int | None = None, max_len: int = 1 << 16) -> list:
        """A JSON array (of ``length`` items when given, at most ``max_len``)."""
        if not isinstance(value, list):
            self.fail(field, value, "a JSON array" + (f" of {length} items" if length is not None else ""))
        if length is not None and len(value) != length:
            self.fail(field, value, f"{length} items, got {len(value)}")
        if len(value) > max_len:
            self.fail(field, f"<array of {len(value)} items>", f"at most {max_len} items")
        return value

    # ---- scalars ---------------------------------------------------------------------------
    def int(self, value: Any, field: str, lo: int = INT_MIN, hi: int = INT_MAX) -> int:
        """An integer (not a bool, float or string) in ``lo..hi``."""
        expected = "an integer" if (lo, hi) == (INT_MIN, INT_MAX) else f"an integer in {lo}..{hi}"
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(field, value, expected)
        return int(value)

    def ints(self, value: Any, field: str, *, length: int | None = None, lo: int = INT_MIN,
             hi: int = INT_MAX, max_len: int = 64) -> tuple[int, ...]:
        """A list of integers (``length`` of them when given) each in ``lo..hi``."""
        items = self.list(value, field, length=length, max_len=max_len)
        return tuple(self.int(v, f"{field}[{i}]", lo, hi) for i, v in enumerate(items))

    def float(self, value: Any, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
        """A finite number (int or float, not a bool or string) in ``lo..hi``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, value, "a finite number")
        try:
            f = float(value)
        except OverflowError:
            self.fail(field, value, "a finite number")
        if not math.isfinite(f) or not lo <= f <= hi:
            self.fail(field, value, f"a finite number in {lo}..{hi}")
        return f

    def bool(self, value: Any, field: str) -> bool:
        """``true`` or ``false`` (not "yes", "no", 0 or 1)."""
        if not isinstance(value, bool):
            self.fail(field, value, "true or false")
        return value

    def str(self, value: Any, field: str, *, choices: Sequence[str] | None = None, max_len: int = 4096) -> str:
        """A string (one of ``choices`` when given), at most ``max_len`` characters."""
        if not isinstance(value, str):
            self.fail(field, value, "a string" if choices is None else f"one of {list(choices)}")
        if choices is not None and value not in choices:
            self.fail(field, value, f"one of {list(choices)}")
        if len(value) > max_len:
            self.fail(field, f"<string of {len(value)} chars>", f"at most {max_len} characters")
        return value


class _Short:
    """A value whose repr is :func:`short` (for ConfigError messages)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return short(self.value)
