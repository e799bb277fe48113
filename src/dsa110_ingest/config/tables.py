"""TOML tables into typed section objects: the types a key may have, one error per mistake."""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from dsa110_ingest.errors import ConfigError

TYPE_NAMES = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path string",
}


def type_ok(value: Any, typ: Any) -> bool:
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ is str or typ is Path:
        return isinstance(value, str)
    if typ == tuple[str, ...]:
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    return False


def parse_table(
    cls: type, table: dict[str, Any], section: str, where: str, sources: dict[str, str]
) -> Any:
    """``cls`` (a section dataclass) from its TOML table; each key's source is recorded."""
    hints = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key `{key}` in [{section}]; known keys: {sorted(hints)}"
            )
        typ = _eval_type(hints[key].type)
        if not type_ok(value, typ):
            tname = TYPE_NAMES.get(typ, "a list of strings")
            raise ConfigError(f"{where}: [{section}] {key} must be {tname}, got {value!r}")
        if typ is float:
            value = float(value)
        elif typ is Path:
            value = Path(value)
        elif typ == tuple[str, ...]:
            value = tuple(value)
        kwargs[key] = value
        sources[f"{section}.{key}"] = where
    return cls(**kwargs)


def _eval_type(t: Any) -> Any:
    if isinstance(t, str):
        return {
            "bool": bool,
            "int": int,
            "float": float,
            "float | None": float,  # optional: absent from the file means None
            "str": str,
            "Path": Path,
            "tuple[str, ...]": tuple[str, ...],
        }[t]
    return t


def check_range(where: str, section: str, key: str, v: float, low: float, inclusive: bool) -> None:
    """Durations, counts and sizes that would stall or spin the daemon, named by key."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{where}: [{section}] {key} must be a finite number, got {v}")
    if v < low or (v == low and not inclusive):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ConfigError(f"{where}: [{section}] {key} must be {bound}, got {v:g}")


def resolve(p: Path, base: Path) -> Path:
    """Absolute and normalised: no `..` left for a prefix check to be fooled by."""
    p = p.expanduser()
    return Path(os.path.normpath((p if p.is_absolute() else base / p).absolute()))
