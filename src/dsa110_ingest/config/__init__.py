"""Settings: one typed object, built once from defaults, a TOML file and the environment.

Only :func:`load_config` looks at the environment; everything else gets the
:class:`Config` it needs handed down. Paths are made absolute here, once: a relative
path in the file is relative to the file's folder, a database name is relative to
``state_dir``, never to the working directory (upstream grew stray databases that way).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dsa110_ingest.config.locations import (
    ROLES,
    WATCH_MODES,
    StorageLocation,
    is_under,
    location_holding,
    parse_locations,
)
from dsa110_ingest.config.sections import (
    BACKENDS,
    EXECUTORS,
    LOCKING,
    ORDERS,
    PHASINGS,
    SECTIONS,
    ConvertConfig,
    GroupsConfig,
    ReadConfig,
    WatchConfig,
)
from dsa110_ingest.config.tables import parse_table, resolve
from dsa110_ingest.config.targets import is_db_uri, redact_db, redact_text
from dsa110_ingest.errors import ConfigError
from dsa110_ingest.naming import DEFAULT_PATTERN

__all__ = [
    "BACKENDS",
    "EXECUTORS",
    "LOCKING",
    "ORDERS",
    "PHASINGS",
    "ROLES",
    "WATCH_MODES",
    "Config",
    "ConvertConfig",
    "GroupsConfig",
    "ReadConfig",
    "StorageLocation",
    "WatchConfig",
    "describe",
    "is_db_uri",
    "is_under",
    "load_config",
    "location_holding",
    "redact_db",
    "redact_text",
]

ENV_CONFIG = "DSA110_INGEST_CONFIG"
ENV_HDF5_DB = "HDF5_DB_PATH"
ENV_PRODUCTS_DB = "PRODUCTS_DB_PATH"


@dataclass(frozen=True)
class Config:
    state_dir: Path
    # a SQLite file, or a libpq URI (str) selecting PostgreSQL: see is_db_uri
    hdf5_db: Path | str
    products_db: Path | str
    storage_locations: tuple[StorageLocation, ...] = ()
    pattern: str = DEFAULT_PATTERN
    log_level: str = "info"
    log_format: str = "auto"
    log_file: Path | None = None
    events_jsonl: Path | None = None
    metrics_listen: str = ""
    # this daemon's name in a shared index: its storage locations, heartbeat and lock
    node: str = field(default_factory=socket.gethostname)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    config_file: Path | None = None
    # key -> where its value came from ("default", "file <path>", "env NAME", "cli")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def with_overrides(self, **changes: Any) -> Config:
        srcs = dict(self.sources)
        for k in changes:
            srcs[k] = "command line"
        cfg = replace(self, **changes, sources=srcs)
        cfg.validate("command line")
        return cfg

    def validate(self, where: str) -> None:
        """Each section checks itself; here what spans sections, and the paths."""
        _check_top_level(self, where)
        for name in SECTIONS:
            getattr(self, name).validate(where)
        n = self.groups.expected_subbands
        if self.convert.min_subbands > n:
            raise ConfigError(
                f"{where}: [convert] min_subbands ({self.convert.min_subbands}) must be <= "
                f"[groups] expected_subbands ({n})"
            )
        _check_listen(self.metrics_listen, where)
        _check_distinct_dbs(self)
        _check_path_kinds(self, where)


def default_state_dir(env: Mapping[str, str]) -> tuple[Path, str]:
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated dirs; the first is ours
        return Path(env["STATE_DIRECTORY"].split(":")[0]), "env STATE_DIRECTORY"
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "dsa110-ingest", "env XDG_STATE_HOME"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "dsa110-ingest", "default (~/.local/state)"


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Build the effective configuration: defaults < TOML file < environment."""
    if env is None:
        env = os.environ
    sources: dict[str, str] = {}
    raw: dict[str, Any] = {}
    cfg_path: Path | None = None
    if path is None and env.get(ENV_CONFIG):
        path = env[ENV_CONFIG]
        sources["config_file"] = f"env {ENV_CONFIG}"
    if path is not None:
        cfg_path = Path(path).expanduser().absolute()
        sources.setdefault("config_file", "command line")
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"config file {cfg_path} does not exist; create it with "
                f"`dsa110-ingest config --example > {cfg_path}` and edit it"
            ) from None
        except PermissionError:
            raise ConfigError(f"config file {cfg_path} is not readable by this user") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {cfg_path} is not valid TOML: {e}") from None
    base = cfg_path.parent if cfg_path else Path.cwd()
    where = f"file {cfg_path}" if cfg_path else "default"
    return _build(raw, base, where, cfg_path, env, sources)


TOP_LEVEL = (
    "state_dir",
    "hdf5_db",
    "products_db",
    "pattern",
    "log_level",
    "log_format",
    "log_file",
    "events_jsonl",
    "metrics_listen",
    "node",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


def _build(
    raw: dict[str, Any],
    base: Path,
    where: str,
    cfg_path: Path | None,
    env: Mapping[str, str],
    sources: dict[str, str],
) -> Config:
    raw = dict(raw)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.pop(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        sections[name] = parse_table(cls, table, name, where, sources)
    locations = parse_locations(raw.pop("storage_locations", []), base, where)
    if locations:
        sources["storage_locations"] = where
    unknown = set(raw) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; known top-level keys are "
            f"{sorted({*TOP_LEVEL, *SECTIONS, 'storage_locations'})}"
        )
    top = _TopLevel(raw, where, sources)
    state_dir = _state_dir(top, base, env)
    # the default output folder lives in state_dir; a configured one is relative to the file
    out_base = base if "convert.output_dir" in sources else state_dir
    cfg = Config(
        state_dir=state_dir,
        hdf5_db=_db(top, "hdf5_db", ENV_HDF5_DB, "hdf5.sqlite3", state_dir, env),
        products_db=_db(top, "products_db", ENV_PRODUCTS_DB, "products.sqlite3", state_dir, env),
        storage_locations=locations,
        pattern=top.text("pattern", DEFAULT_PATTERN),
        log_level=top.text("log_level", "info").lower(),
        log_format=top.text("log_format", "auto"),
        log_file=top.path("log_file", base),
        events_jsonl=top.path("events_jsonl", base),
        metrics_listen=top.text("metrics_listen", ""),
        node=_node(top.raw, where, top.sources),
        groups=sections["groups"],
        watch=sections["watch"],
        read=sections["read"],
        convert=sections["convert"].with_paths(out_base, base),
        config_file=cfg_path,
        sources=sources,
    )
    cfg.validate(where)
    return cfg


class _TopLevel:
    """The top-level keys of the file; each one read records where its value came from."""

    def __init__(self, raw: dict[str, Any], where: str, sources: dict[str, str]) -> None:
        self.raw, self.where, self.sources = raw, where, sources
        for k in raw:
            sources[k] = where

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def text(self, key: str, default: str) -> str:
        v = self.raw.get(key, default)
        if not isinstance(v, str):
            raise ConfigError(f"{self.where}: `{key}` must be a string, got {type(v).__name__}")
        return v

    def path(self, key: str, base: Path) -> Path | None:
        v = self.text(key, "")
        return resolve(Path(v), base) if v else None


def _state_dir(top: _TopLevel, base: Path, env: Mapping[str, str]) -> Path:
    if "state_dir" in top:
        return resolve(Path(top.text("state_dir", "")), base)
    state_dir, top.sources["state_dir"] = default_state_dir(env)
    return state_dir.expanduser().absolute()


def _db(
    top: _TopLevel,
    key: str,
    envname: str,
    default_name: str,
    state_dir: Path,
    env: Mapping[str, str],
) -> Path | str:
    if env.get(envname):
        top.sources[key] = f"env {envname}"
        if is_db_uri(env[envname]):
            return env[envname]
        return resolve(Path(env[envname]), state_dir)
    if is_db_uri(top.raw.get(key)):
        return str(top.raw[key])
    if key not in top:
        top.sources[key] = "default (state_dir)"
    # a bare name or relative path of a DB lives in state_dir, whatever the cwd
    return resolve(Path(top.text(key, default_name)).expanduser(), state_dir)


# Port of the metrics endpoint in examples and docs: outside 9100-9999, the range the
# Prometheus wiki hands out to exporters (node_exporter 9100, graphite_exporter 9108, ...).
DEFAULT_METRICS_PORT = 11010
EXAMPLE_METRICS_LISTEN = f"127.0.0.1:{DEFAULT_METRICS_PORT}"


def _check_top_level(cfg: Config, where: str) -> None:
    try:
        rx = re.compile(cfg.pattern)
    except re.error as e:
        raise ConfigError(f"{where}: `pattern` is not a valid regular expression: {e}") from None
    if not {"timestamp", "index"} <= set(rx.groupindex):
        raise ConfigError(
            f"{where}: `pattern` must have named groups (?P<timestamp>...) and (?P<index>...)"
        )
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"{where}: `log_level` must be debug, info, warning or error")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError(f"{where}: `log_format` must be auto, json or console")


def _check_listen(value: str, where: str) -> None:
    """``HOST:PORT`` (``[v6]:PORT`` too), checked here so the daemon never meets a bad one."""
    if not value:
        return
    host, sep, port = value.rpartition(":")
    ok = sep and port.isdigit() and 0 < int(port) <= 65535 and host.strip("[]") != ""
    if not ok:
        raise ConfigError(
            f"{where}: `metrics_listen` {value!r} must be HOST:PORT with a port in 1-65535, "
            f"e.g. {EXAMPLE_METRICS_LISTEN!r}"
        )


_FILE_EXAMPLES = {
    "hdf5_db": "hdf5.sqlite3",
    "products_db": "products.sqlite3",
    "events_jsonl": "events.jsonl",
    "log_file": "ingest.log",
}


def _check_path_kinds(cfg: Config, where: str) -> None:
    """A folder where a file is expected (or the reverse) gave tracebacks deep inside."""
    src = cfg.sources
    if cfg.state_dir.exists() and not cfg.state_dir.is_dir():
        raise ConfigError(
            f"{src.get('state_dir', where)}: `state_dir` {cfg.state_dir} is a file, not a "
            "folder; point it at a folder (it is created if missing)"
        )
    for key in ("hdf5_db", "products_db", "events_jsonl", "log_file"):
        p = getattr(cfg, key)
        if isinstance(p, str):
            continue  # a database URI: nothing on this host's disk to check
        if p is not None and p.is_dir():
            raise ConfigError(
                f"{src.get(key, where)}: `{key}` {p} is a folder; it must name a file, "
                f"e.g. {p / _FILE_EXAMPLES[key]}"
            )
        if p is not None and p.parent.exists() and not p.parent.is_dir():
            raise ConfigError(
                f"{src.get(key, where)}: `{key}` {p}: {p.parent} is a file, not a folder"
            )


def _node(raw: Mapping[str, Any], where: str, sources: dict[str, str]) -> str:
    """The node name: rows of a shared index carry it, so it must be one stable token."""
    if "node" not in raw:
        sources["node"] = "default (host name)"
        return socket.gethostname()
    v = raw["node"]
    if not isinstance(v, str) or not v.strip() or v != v.strip() or not v.isprintable():
        raise ConfigError(
            f"{where}: `node` must be a non-empty printable name without surrounding "
            f"spaces (e.g. the host name {socket.gethostname()!r}), got {v!r}"
        )
    if len(v) > 255:
        raise ConfigError(f"{where}: `node` is {len(v)} characters long; keep it <= 255")
    return v


def _check_distinct_dbs(cfg: Config) -> None:
    a, b = cfg.hdf5_db, cfg.products_db
    if isinstance(a, str) or isinstance(b, str):
        if a == b:
            raise ConfigError(
                f"hdf5_db and products_db both point at {redact_db(a)}: inputs and outputs "
                "must live in two databases; give each its own database name"
            )
        return
    if os.path.normpath(cfg.hdf5_db) == os.path.normpath(cfg.products_db):
        raise ConfigError(
            f"hdf5_db and products_db both point at {cfg.hdf5_db}: inputs and outputs must "
            "live in two databases; set one of them (or HDF5_DB_PATH/PRODUCTS_DB_PATH) apart"
        )


def describe(cfg: Config) -> list[tuple[str, Any, str]]:
    """(key, value, source) rows for ``dsa110-ingest config``."""
    rows: list[tuple[str, Any, str]] = [
        ("config_file", cfg.config_file, cfg.sources.get("config_file", "none (embedded default)"))
    ]
    for key in TOP_LEVEL:
        value = getattr(cfg, key)
        if key in ("hdf5_db", "products_db"):
            value = redact_db(value) if isinstance(value, str) else value
        rows.append((key, value, cfg.sources.get(key, "default")))
    for i, loc in enumerate(cfg.storage_locations):
        for f in fields(StorageLocation):
            rows.append(
                (
                    f"storage_locations[{i}].{f.name}",
                    getattr(loc, f.name),
                    cfg.sources.get("storage_locations", "default"),
                )
            )
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in fields(obj):
            key = f"{section}.{f.name}"
            rows.append((key, getattr(obj, f.name), cfg.sources.get(key, "default")))
    return rows
