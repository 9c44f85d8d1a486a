"""Parsing of option values that several ``flexsnn`` commands share (comma-separated lists).

Lives outside ``commands/`` so that command modules never import each other.
"""

from __future__ import annotations


def parse_floats(text: str, *, option: str) -> list[float]:
    """``"0,0.1,0.2"`` -> ``[0.0, 0.1, 0.2]`` (ConfigError naming ``option`` otherwise)."""
    from flexsnn.errors import ConfigError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(option, text, "comma-separated numbers, e.g. 0,0.05,0.1") from err
    if not values:
        raise ConfigError(option, text, "at least one number")
    return values
