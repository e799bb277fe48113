"""Settings: one typed object, built once from defaults, a TOML file and the environment.

Only :func:`load_config` looks at the environment; everything else gets the
:class:`Config` it needs handed down. Paths are made absolute here, once: a relative
path in the file is relative to the file's folder, a database name is relative to
``state_dir``, never to the working directory (upstream grew stray databases that way).
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dsa110_ingest.errors import ConfigError
from dsa110_ingest.naming import DEFAULT_PATTERN

ENV_CONFIG = "DSA110_INGEST_CONFIG"
ENV_HDF5_DB = "HDF5_DB_PATH"
ENV_PRODUCTS_DB = "PRODUCTS_DB_PATH"

WATCH_MODES = ("auto", "inotify", "poll")
ROLES = ("incoming", "archive", "staging", "adhoc")
ORDERS = ("oldest_first", "newest_first")
BACKENDS = ("native", "pyuvdata", "command")
PHASINGS = ("meridian", "meridian_mid")
LOCKING = ("best-effort", "true", "false")
EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class StorageLocation:
    name: str
    path: Path
    role: str = "incoming"
    recursive: bool = False
    watch: str = "auto"
    description: str = ""


@dataclass(frozen=True)
class GroupsConfig:
    expected_subbands: int = 16
    cluster_tolerance_seconds: float = 60.0
    incomplete_timeout_seconds: float = 900.0
    # A name timestamp this far from the header's first integration means a misnamed file.
    max_header_skew_seconds: float = 600.0


@dataclass(frozen=True)
class WatchConfig:
    settle_seconds: float = 5.0
    poll_interval_seconds: float = 5.0
    rescan_interval_seconds: float = 600.0
    locked_retry_max_seconds: float = 600.0
    incomplete_check_seconds: float = 10.0


@dataclass(frozen=True)
class ReadConfig:
    hdf5_locking: str = "best-effort"
    workers: int = 0  # 0: one reader process per core for backfills
    batch_size: int = 256
    # a header read still running after this is killed and the file rejected (a hang)
    deadline_seconds: float = 30.0


@dataclass(frozen=True)
class ConvertConfig:
    enabled: bool = True
    backend: str = "native"
    output_dir: Path = Path("ms")
    ms_name: str = "{group_id}.ms"
    workers: int = 1
    max_attempts: int = 4
    backoff_initial_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 1800.0
    warn_after_seconds: float = 270.0
    order: str = "oldest_first"
    command: tuple[str, ...] = ()
    convert_incomplete_after_seconds: float = 0.0  # 0: incomplete groups are never converted
    min_subbands: int = 16
    # the Measurement Set recipe (docs/architecture.md, "Conversion"): see convert/plan.py
    phasing: str = "meridian"  # one centre per integration; "meridian_mid": one at mid time
    pointing_dec_deg: float | None = None  # None: Header/extra_keywords/phase_center_dec
    time_tolerance_seconds: float = 0.0  # 0: half an integration
    min_time_overlap: float = 0.5
    imaging_columns: bool = False  # MODEL_DATA, CORRECTED_DATA, WEIGHT_SPECTRUM
    telescope_name: str = ""  # "": as the files say
    # where conversions run: "local" child processes, or tasks on a Dask cluster
    executor: str = "local"
    dask_scheduler: str = ""  # "tcp://host:8786"
    dask_scheduler_file: str = ""  # or the JSON file `dask scheduler --scheduler-file` writes
    dask_resource: str = "conversion"  # each task takes 1; "" runs one per worker thread


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
        _check_distinct_dbs(cfg)
        _listen(cfg.metrics_listen, "command line")
        _check_path_kinds(cfg, "command line")
        return cfg


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


def _build(
    raw: dict[str, Any],
    base: Path,
    where: str,
    cfg_path: Path | None,
    env: Mapping[str, str],
    sources: dict[str, str],
) -> Config:
    raw = dict(raw)
    sections = {
        "groups": GroupsConfig,
        "watch": WatchConfig,
        "read": ReadConfig,
        "convert": ConvertConfig,
    }
    parsed_sections: dict[str, Any] = {}
    for name, cls in sections.items():
        table = raw.pop(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        parsed_sections[name] = _parse_table(cls, table, name, where, sources)

    locs_raw = raw.pop("storage_locations", [])
    if not isinstance(locs_raw, list):
        raise ConfigError(f"{where}: storage_locations must be an array of tables [[...]]")

    top_known = {
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
    }
    unknown = set(raw) - top_known
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; known top-level keys are "
            f"{sorted(top_known | set(sections) | {'storage_locations'})}"
        )
    for k in raw:
        sources[k] = where

    def _str(key: str, default: str) -> str:
        v = raw.get(key, default)
        if not isinstance(v, str):
            raise ConfigError(f"{where}: `{key}` must be a string, got {type(v).__name__}")
        return v

    if "state_dir" in raw:
        state_dir = _resolve(Path(_str("state_dir", "")), base)
    else:
        state_dir, sources["state_dir"] = default_state_dir(env)
        state_dir = state_dir.expanduser().absolute()

    def _db(key: str, envname: str, default_name: str) -> Path | str:
        if env.get(envname):
            sources[key] = f"env {envname}"
            if is_db_uri(env[envname]):
                return env[envname]
            return _resolve(Path(env[envname]), state_dir)
        if is_db_uri(raw.get(key)):
            return str(raw[key])
        p = Path(_str(key, default_name)).expanduser()
        if key not in raw:
            sources[key] = "default (state_dir)"
        # a bare name or relative path of a DB lives in state_dir, whatever the cwd
        return _resolve(p, state_dir)

    hdf5_db = _db("hdf5_db", ENV_HDF5_DB, "hdf5.sqlite3")
    products_db = _db("products_db", ENV_PRODUCTS_DB, "products.sqlite3")

    locations = tuple(_parse_location(i, t, base, where) for i, t in enumerate(locs_raw))
    if locs_raw:
        sources["storage_locations"] = where
    names = [loc.name for loc in locations]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{where}: storage location name(s) {sorted(dup)} used twice")
    paths = [loc.path for loc in locations]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise ConfigError(
                    f"{where}: storage locations {a} and {b} overlap; a file must belong "
                    "to exactly one location"
                )

    pattern = _str("pattern", DEFAULT_PATTERN)
    try:
        import re

        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: `pattern` is not a valid regular expression: {e}") from None
    if not {"timestamp", "index"} <= set(rx.groupindex):
        raise ConfigError(
            f"{where}: `pattern` must have named groups (?P<timestamp>...) and (?P<index>...)"
        )

    log_level = _str("log_level", "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: `log_level` must be debug, info, warning or error")
    log_format = _str("log_format", "auto")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(f"{where}: `log_format` must be auto, json or console")

    def _opt_path(key: str) -> Path | None:
        v = _str(key, "")
        return _resolve(Path(v), base) if v else None

    conv: ConvertConfig = parsed_sections["convert"]
    # the default output folder lives in state_dir; a configured one is relative to the file
    out_base = base if "convert.output_dir" in sources else state_dir
    conv = replace(conv, output_dir=_resolve(conv.output_dir, out_base))
    if conv.dask_scheduler_file:
        conv = replace(
            conv, dask_scheduler_file=str(_resolve(Path(conv.dask_scheduler_file), base))
        )
    _validate_convert(conv, where)
    grp: GroupsConfig = parsed_sections["groups"]
    _check_ranges(parsed_sections | {"convert": conv}, where)
    rd: ReadConfig = parsed_sections["read"]
    if rd.hdf5_locking not in LOCKING:
        raise ConfigError(f"{where}: [read] hdf5_locking must be one of {LOCKING}")

    cfg = Config(
        state_dir=state_dir,
        hdf5_db=hdf5_db,
        products_db=products_db,
        storage_locations=locations,
        pattern=pattern,
        log_level=log_level,
        log_format=log_format,
        log_file=_opt_path("log_file"),
        events_jsonl=_opt_path("events_jsonl"),
        metrics_listen=_listen(_str("metrics_listen", ""), where),
        node=_node(raw, where, sources),
        groups=grp,
        watch=parsed_sections["watch"],
        read=rd,
        convert=conv,
        config_file=cfg_path,
        sources=sources,
    )
    _check_distinct_dbs(cfg)
    _check_path_kinds(cfg, where)
    return cfg


# Port of the metrics endpoint in examples and docs: outside 9100-9999, the range the
# Prometheus wiki hands out to exporters (node_exporter 9100, graphite_exporter 9108, ...).
DEFAULT_METRICS_PORT = 11010
EXAMPLE_METRICS_LISTEN = f"127.0.0.1:{DEFAULT_METRICS_PORT}"

# (section, key, lowest allowed, is the lowest itself allowed)
_RANGES: tuple[tuple[str, str, float, bool], ...] = (
    ("groups", "expected_subbands", 1, True),
    ("groups", "cluster_tolerance_seconds", 0, False),
    ("groups", "incomplete_timeout_seconds", 0, False),
    ("groups", "max_header_skew_seconds", 0, False),
    ("watch", "settle_seconds", 0, False),
    ("watch", "poll_interval_seconds", 0, False),
    ("watch", "rescan_interval_seconds", 0, False),
    ("watch", "locked_retry_max_seconds", 0, False),
    ("watch", "incomplete_check_seconds", 0, False),
    ("read", "workers", 0, True),
    ("read", "batch_size", 1, True),
    ("convert", "workers", 1, True),
    ("convert", "max_attempts", 1, True),
    ("convert", "backoff_initial_seconds", 0, False),
    ("convert", "backoff_max_seconds", 0, False),
    ("convert", "lease_seconds", 0, False),
    ("convert", "timeout_seconds", 0, False),
    ("convert", "warn_after_seconds", 0, False),
    ("convert", "convert_incomplete_after_seconds", 0, True),
    ("convert", "min_subbands", 1, True),
)


def _check_ranges(sections: Mapping[str, Any], where: str) -> None:
    """Durations, counts and sizes that would stall or spin the daemon, named by key."""
    for section, key, low, inclusive in _RANGES:
        v = getattr(sections[section], key)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}: [{section}] {key} must be a finite number, got {v}")
        if v < low or (v == low and not inclusive):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise ConfigError(f"{where}: [{section}] {key} must be {bound}, got {v:g}")
    conv = sections["convert"]
    if conv.backoff_max_seconds < conv.backoff_initial_seconds:
        raise ConfigError(
            f"{where}: [convert] backoff_max_seconds ({conv.backoff_max_seconds:g}) must be >= "
            f"backoff_initial_seconds ({conv.backoff_initial_seconds:g})"
        )
    n = sections["groups"].expected_subbands
    if conv.min_subbands > n:
        raise ConfigError(
            f"{where}: [convert] min_subbands ({conv.min_subbands}) must be <= [groups] "
            f"expected_subbands ({n})"
        )


def _listen(value: str, where: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` too), checked here so the daemon never meets a bad one."""
    if not value:
        return value
    host, sep, port = value.rpartition(":")
    ok = sep and port.isdigit() and 0 < int(port) <= 65535 and host.strip("[]") != ""
    if not ok:
        raise ConfigError(
            f"{where}: `metrics_listen` {value!r} must be HOST:PORT with a port in 1-65535, "
            f"e.g. {EXAMPLE_METRICS_LISTEN!r}"
        )
    return value


_FILE_EXAMPLES = {
    "hdf5_db": "hdf5.sqlite3",
    "products_db": "products.sqlite3",
    "events_jsonl": "events.jsonl",
    "log_file": "ingest.log",
}


def _check_path_kinds(cfg: Config, where: str) -> None:
    """A folder where a file is expected (or the reverse) gave tracebacks deep inside."""
    src = cfg.sources
    for key in ("state_dir",):
        p = getattr(cfg, key)
        if p.exists() and not p.is_dir():
            raise ConfigError(
                f"{src.get(key, where)}: `{key}` {p} is a file, not a folder; point it at a "
                "folder (it is created if missing)"
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


def _resolve(p: Path, base: Path) -> Path:
    """Absolute and normalised: no `..` left for a prefix check to be fooled by."""
    p = p.expanduser()
    return Path(os.path.normpath((p if p.is_absolute() else base / p).absolute()))


def is_db_uri(value: object) -> bool:
    """A libpq URI (``postgresql://`` or ``postgres://``, unix sockets included as
    ``postgresql:///db?host=/run/postgresql``): kept as written, never made a path."""
    return isinstance(value, str) and value.lower().startswith(("postgresql://", "postgres://"))


def redact_db(value: Path | str) -> str:
    """A database setting for people to read: a URI without its password."""
    s = str(value)
    if not is_db_uri(s):
        return s
    head, rest = s.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        netloc = f"{cred.split(':', 1)[0]}@{host}"
    tail = re.sub(r"(?i)(^|[?&])password=[^&]*&?", r"\1", tail).rstrip("?&")
    return f"{head}://{netloc}{sep}{tail}"


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


def _type_ok(value: Any, typ: Any) -> bool:
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


_TYPE_NAMES = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path string",
}


def _parse_table(
    cls: type, table: dict[str, Any], section: str, where: str, sources: dict[str, str]
) -> Any:
    hints = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key `{key}` in [{section}]; known keys: {sorted(hints)}"
            )
        typ = _eval_type(hints[key].type)
        if not _type_ok(value, typ):
            tname = _TYPE_NAMES.get(typ, "a list of strings")
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


def _parse_location(i: int, t: Any, base: Path, where: str) -> StorageLocation:
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: storage_locations[{i}] must be a table")
    loc_fields = {f.name for f in fields(StorageLocation)}
    unknown = set(t) - loc_fields
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)} in storage_locations[{i}]; "
            f"known: {sorted(loc_fields)}"
        )
    for req in ("name", "path"):
        if not isinstance(t.get(req), str) or not t[req]:
            raise ConfigError(f"{where}: storage_locations[{i}] needs a string `{req}`")
    for key, typ in (("role", str), ("watch", str), ("description", str), ("recursive", bool)):
        if key in t and not _type_ok(t[key], typ):
            raise ConfigError(f"{where}: storage_locations[{i}].{key} must be {_TYPE_NAMES[typ]}")
    role = t.get("role", "incoming")
    if role not in ROLES:
        raise ConfigError(f"{where}: storage_locations[{i}].role must be one of {ROLES}")
    watch = t.get("watch", "auto")
    if watch not in WATCH_MODES:
        raise ConfigError(f"{where}: storage_locations[{i}].watch must be one of {WATCH_MODES}")
    return StorageLocation(
        name=t["name"],
        path=_resolve(Path(t["path"]), base),
        role=role,
        recursive=t.get("recursive", False),
        watch=watch,
        description=t.get("description", ""),
    )


def _validate_convert(c: ConvertConfig, where: str) -> None:
    if c.backend not in BACKENDS:
        raise ConfigError(f"{where}: [convert] backend must be one of {BACKENDS}")
    if c.order not in ORDERS:
        raise ConfigError(f"{where}: [convert] order must be one of {ORDERS}")
    if c.backend == "command" and not c.command:
        raise ConfigError(
            f'{where}: [convert] backend = "command" needs `command`, an argv list such as '
            '["my-converter", "--out", "{output}", "{inputs}"]'
        )
    if "{group_id}" not in c.ms_name:
        raise ConfigError(f"{where}: [convert] ms_name must contain {{group_id}}")
    if c.phasing not in PHASINGS:
        raise ConfigError(f"{where}: [convert] phasing must be one of {PHASINGS}")
    if not (c.pointing_dec_deg is None or -90.0 <= c.pointing_dec_deg <= 90.0):
        raise ConfigError(
            f"{where}: [convert] pointing_dec_deg must be a declination in degrees "
            "(-90 .. 90); leave it out to take it from the files"
        )
    if c.time_tolerance_seconds < 0 or not 0.0 < c.min_time_overlap <= 1.0:
        raise ConfigError(
            f"{where}: [convert] time_tolerance_seconds must be >= 0 (0: half an "
            "integration) and min_time_overlap a fraction in (0, 1]"
        )
    if c.executor not in EXECUTORS:
        raise ConfigError(f"{where}: [convert] executor must be one of {EXECUTORS}")
    if c.executor == "dask" and bool(c.dask_scheduler) == bool(c.dask_scheduler_file):
        raise ConfigError(
            f'{where}: [convert] executor = "dask" needs exactly one of dask_scheduler '
            '(e.g. "tcp://head-node:8786") and dask_scheduler_file'
        )


def describe(cfg: Config) -> list[tuple[str, Any, str]]:
    """(key, value, source) rows for ``dsa110-ingest config``."""
    rows: list[tuple[str, Any, str]] = [
        ("config_file", cfg.config_file, cfg.sources.get("config_file", "none (embedded default)"))
    ]
    for key in (
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
    ):
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
    for section in ("groups", "watch", "read", "convert"):
        obj = getattr(cfg, section)
        for f in fields(obj):
            key = f"{section}.{f.name}"
            rows.append((key, getattr(obj, f.name), cfg.sources.get(key, "default")))
    return rows
