"""Parsing and checks of option values that several ``flexsnn`` commands share: ranges,
comma-separated lists, JSON option values, typed config fields and output paths. Each failure
is a :class:`~flexsnn.errors.ConfigError` naming the option (or field), the value and what is
allowed, so the CLI prints it as one line. Lives outside ``commands/`` so that command modules
never import each other.

Numeric command-line options declare their range on the option itself with
``callback=in_range(lo, hi)``: it runs while the command line is parsed, before any work, and
fails as ``--limit=-5 is invalid: expected an integer >= 1``. The limits the commands share live
here (:data:`MAX_SEED`, :data:`MAX_T`, ...).
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

from flexsnn.errors import ConfigError

#: seeds feed numpy's SeedSequence and torch.manual_seed: non-negative, 32 bits
MAX_SEED = 2**32 - 1
#: time bins of a sample: far above any trained model (T <= 100 in the papers) and small enough
#: that a batch of 64 frame tensors [T, 2, 34, 34] (float32) stays below 600 MB
MAX_T = 1_000
#: samples / batch sizes / epochs: generous but finite
MAX_COUNT = 10_000_000


def check_range(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                integer: bool = False, above: float | None = None) -> Any:
    """Return ``value`` when it is a finite number (an int when ``integer``) in ``[lo, hi]``
    (and ``> above`` when given).

    Raises:
        ConfigError: wrong type, NaN/inf, or outside the range (field ``name``).
    """
    expected = "an integer" if integer else "a number"
    if above is not None:
        expected += f" > {above}" + (f" and <= {hi}" if hi is not None else "")
    elif lo is not None and hi is not None:
        expected += f" in {lo}..{hi}"
    elif lo is not None:
        expected += f" >= {lo}"
    elif hi is not None:
        expected += f" <= {hi}"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok_type or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(name, value, expected)
    if ((lo is not None and value < lo) or (hi is not None and value > hi)
            or (above is not None and not value > above)):
        raise ConfigError(name, value, expected)
    return value


def in_range(lo: float | None = None, hi: float | None = None, *,
             above: float | None = None) -> Callable[..., Any]:
    """A typer option callback that checks the option's value with :func:`check_range`
    (``None`` passes: "not given"; a repeated option checks each value).

    Example::

        limit: Optional[int] = typer.Option(None, "--limit", callback=in_range(1))
    """
    import typer

    def check(param, value):
        if value is None:
            return value
        name = max(param.opts, key=len)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            check_range(name, v, lo=lo, hi=hi, above=above, integer=isinstance(v, int))
        return value

    check.__annotations__ = {"param": typer.CallbackParam}  # typer passes the parameter by type
    return check


def parse_floats(text: str, *, option: str) -> list[float]:
    """``"0,0.1,0.2"`` -> ``[0.0, 0.1, 0.2]`` (ConfigError naming ``option`` otherwise)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(option, text, "comma-separated numbers, e.g. 0,0.05,0.1") from err
    if not values:
        raise ConfigError(option, text, "at least one number")
    return values


def parse_ints(text: str, *, option: str, count: int | None = None, example: str = "16,32,64") -> list[int]:
    """``"16,32,64"`` -> ``[16, 32, 64]`` (``count`` values when given; ConfigError naming
    ``option`` otherwise)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(option, text, f"comma-separated integers, e.g. {example}") from err
    if not values or (count is not None and len(values) != count):
        raise ConfigError(option, text, f"{count or 'at least one'} comma-separated integers, e.g. {example}")
    return values


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """Parse an option holding a JSON object (e.g. ``--model-kwargs '{"T": 4}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(option, text, 'a JSON object such as \'{"batch_norm": true}\'',
                          f"It is not JSON ({err.msg} at character {err.pos})") from err
    if not isinstance(value, dict):
        raise ConfigError(option, text, 'a JSON object such as \'{"batch_norm": true}\'',
                          f"Got a JSON {type(value).__name__}")
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (dict,) or hint is dict:
        return isinstance(value, dict)
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, (list, tuple))
    if is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True  # a type this checker does not know: the class's own checks decide


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if is_dataclass(hint):
        return "a JSON object"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "a JSON object"}
    return names.get(hint, names.get(origin, getattr(hint, "__name__", str(hint))))


def check_field_types(cls: type, raw: dict[str, Any], *, where: str = "") -> None:
    """Check each value of ``raw`` against the annotation of dataclass ``cls``'s field of that
    name (ints are not bools, floats accept ints, ``X | None`` accepts null; nested dataclass
    fields are checked as ``where.field.sub``). Unknown keys are left to the caller.

    Raises:
        ConfigError: naming ``where`` + the field, the value and the expected type.
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name not in raw:
            continue
        value, hint = raw[f.name], hints[f.name]
        name = f"{where}{f.name}"
        if not _type_ok(value, hint):
            raise ConfigError(name, value, _type_name(hint))
        if is_dataclass(hint) and isinstance(value, dict):
            check_field_types(hint, value, where=f"{name}.")


def check_output_path(path: str | os.PathLike[str], option: str, *, folder: bool = False) -> Path:
    """Check an output path before any work starts and return it.

    A file output must not be an existing folder; a folder output must not be an existing
    file. The nearest existing ancestor must be a folder (not a regular file: the path cannot
    be created under a file) and writable; missing folders in between are created later.

    Raises:
        ConfigError: naming ``option``, the path and the problem.
    """
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(option, str(path), "a folder", "A file with this name exists")
    if not folder and p.is_dir():
        raise ConfigError(option, str(path), "a file path", "It is an existing folder; add a file name")
    ancestor = p.parent if not (folder and p.is_dir()) else p
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(option, str(path), "a path that can be created",
                          f"{ancestor} is a regular file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(option, str(path), "a writable location",
                          f"{ancestor} is not writable; choose another path")
    return p
