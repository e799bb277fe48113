"""``dsa110-ingest config``: the effective settings as TOML (each value's source as a
comment) or JSON; ``--example`` prints the commented example shipped in the package."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from dsa110_ingest import __version__
from dsa110_ingest.cli._common import EXIT_OK, print_json
from dsa110_ingest.config import Config, is_db_uri, redact_db

NAME = "config"
HELP = "print the effective settings (TOML, or --json) and where each came from"
DESCRIPTION = (
    "The output is a valid config file: `dsa110-ingest config > ingest.toml` "
    "freezes the effective settings. Start a new deployment from --example."
)
EXIT_CODES: dict[int, str] = {}
# fields of Config that are bookkeeping, not settings
_NOT_SETTINGS = {"config_file", "sources"}


def NEEDS_CONFIG(args: argparse.Namespace) -> bool:
    return not args.example


def add_arguments(s: argparse.ArgumentParser) -> None:
    how = s.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="values and sources as one JSON object")
    how.add_argument(
        "--example",
        action="store_true",
        help="print the commented example config shipped with the package (every key)",
    )


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if v is None:
        return ""  # how the file says "not set" for an optional path
    return v


def settings(cfg: Config) -> dict[str, Any]:
    """The config as the nested dict a TOML file would hold."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if f.name in _NOT_SETTINGS:
            continue
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            # an optional number that is not set has no TOML form: absent means unset
            out[f.name] = {
                g.name: _plain(getattr(v, g.name))
                for g in fields(v)
                if getattr(v, g.name) is not None or "Path" in str(g.type)
            }
        elif isinstance(v, tuple) and v and is_dataclass(v[0]):
            out[f.name] = [{g.name: _plain(getattr(x, g.name)) for g in fields(x)} for x in v]
        elif is_db_uri(v):
            # never print a password (a terminal, a ticket, a chat): libpq reads it from
            # ~/.pgpass or PGPASSFILE instead (docs/scale-out.md)
            out[f.name] = redact_db(v)
        else:
            out[f.name] = _plain(v)
    return out


def _masked(cfg: Config) -> list[str]:
    """The settings whose password ``settings`` left out."""
    return [
        k for k in ("hdf5_db", "products_db") if redact_db(getattr(cfg, k)) != str(getattr(cfg, k))
    ]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        # a JSON string without \\u escapes of non-ASCII is a valid TOML basic string
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def render_toml(cfg: Config) -> str:
    src = cfg.sources
    lines = [
        f"# effective configuration of dsa110-ingest {__version__}",
        f"# config file: {cfg.config_file or 'none (built-in defaults)'}"
        + (f" ({src['config_file']})" if "config_file" in src else ""),
        "# each value's source is in the comment after it",
        "",
    ]
    tables: list[tuple[str, Any]] = []
    masked = _masked(cfg)
    for key, v in settings(cfg).items():
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
            tables.append((key, v))
            continue
        hidden = " (password not shown: keep it in ~/.pgpass)" if key in masked else ""
        lines.append(f"{key} = {toml_value(v)}    # {src.get(key, 'default')}{hidden}")
    for key, v in tables:
        if isinstance(v, list):  # an array of tables: [[storage_locations]]
            for item in v:
                lines += ["", f"[[{key}]]    # {src.get(key, 'default')}"]
                lines += [f"{k} = {toml_value(x)}" for k, x in item.items()]
        else:
            lines += ["", f"[{key}]"]
            lines += [
                f"{k} = {toml_value(x)}    # {src.get(f'{key}.{k}', 'default')}"
                for k, x in v.items()
            ]
    return "\n".join(lines) + "\n"


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    if args.example:
        from dsa110_ingest import data

        print(data.read(data.EXAMPLE_CONFIG), end="")
        return EXIT_OK
    assert cfg is not None
    if args.json:
        print_json(
            {
                "config_file": str(cfg.config_file) if cfg.config_file else None,
                "settings": settings(cfg),
                "sources": dict(cfg.sources),
                "passwords_not_shown": _masked(cfg),
            }
        )
        return EXIT_OK
    print(render_toml(cfg), end="")
    return EXIT_OK
