"""``dsa110-ingest doctor``: check an installation; each check OK, WARN or FAIL with the fix."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dsa110_ingest.config import Config, redact_db
from dsa110_ingest.convert.backends import check_available
from dsa110_ingest.db import backend_of, index_exists, open_index_at, open_products_at
from dsa110_ingest.db.store import Store
from dsa110_ingest.errors import ConfigError, IngestError
from dsa110_ingest.ingest.watch_mode import choose_mode, mount_of, needs_polling

GIB = 1024**3
# a real group's MS is ~5 GB; below a day of them (288) the output fills within hours
FREE_WARN = 300 * 5 * GIB
FREE_FAIL = 5 * GIB
DB_NAMES = ("hdf5.sqlite3", "products.sqlite3")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system")


@dataclass
class Check:
    level: str  # OK, WARN, FAIL
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:4}  {self.name}: {self.detail}"


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _on_disk(target: Path | str) -> bool:
    """A SQLite file (checked on this host's disk), not a server database's URI."""
    return backend_of(target) == "sqlite"


def check_db_path(label: str, path: Path | str, mounts: str) -> Iterator[Check]:
    if not isinstance(path, Path):
        yield Check("OK", label, f"{redact_db(path)} (PostgreSQL server)")
        return
    if not path.is_absolute():
        yield Check("FAIL", label, f"{path} is relative; make it absolute in the config")
        return
    parent = path if path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        yield Check("FAIL", label, f"{parent} is not writable by this user; chown/chmod it")
    _, fstype = mount_of(path.parent if path.parent.exists() else parent, mounts)
    if needs_polling(fstype):
        yield Check(
            "FAIL",
            label,
            f"{path} is on {fstype}: SQLite locking is unsafe on network "
            "and FUSE filesystems; move it to a local disk",
        )
    else:
        yield Check("OK", label, f"{path} ({fstype})")


def check_integrity(label: str, path: Path | str, opener: Callable[..., Store]) -> Iterator[Check]:
    if _on_disk(path) and not Path(path).exists():
        yield Check("WARN", label, f"{path} does not exist yet (created at first start)")
        return
    try:
        with opener(path, readonly=True) as db:
            res = db.integrity()
    except IngestError as e:
        yield Check("FAIL", label, f"cannot open {path}: {e}")
        return
    if res == "ok":
        yield Check("OK", label, "integrity check: ok")
    else:
        yield Check("FAIL", label, f"integrity check: {res}; restore from a backup")


def stray_databases(cfg: Config, cwd: Path) -> list[Path]:
    """This project's DB names where upstream's cwd-relative paths used to leave them."""
    places = [
        cwd,
        cwd / "state",
        cwd / "src" / "state",
        cwd / "state" / "logs" / "state",
        cfg.state_dir / "logs" / "state",
        cfg.state_dir / "state",
    ]
    places += [p / "state" for p in (cwd / "src").glob("*") if p.is_dir()]
    real = {Path(p).resolve() for p in (cfg.hdf5_db, cfg.products_db) if _on_disk(p)}
    found = []
    for d in places:
        for name in DB_NAMES:
            f = d / name
            if f.exists() and f.resolve() not in real:
                found.append(f)
    return found


@dataclass(frozen=True)
class Context:
    cwd: Path
    mounts: str = "/proc/self/mounts"
    # where an installed unit is looked for, the first found wins (as systemd's own order)
    units: tuple[Path, ...] = tuple(Path(d, "dsa110-ingest.service") for d in UNIT_DIRS)


def check_config(cfg: Config, ctx: Context) -> Iterator[Check]:
    yield Check("OK", "config", f"valid ({cfg.config_file or 'built-in defaults'})")


def check_db_paths(cfg: Config, ctx: Context) -> Iterator[Check]:
    yield from check_db_path("hdf5 db path", cfg.hdf5_db, ctx.mounts)
    yield from check_db_path("products db path", cfg.products_db, ctx.mounts)
    yield Check(
        "OK", "databases distinct", f"{redact_db(cfg.hdf5_db)} != {redact_db(cfg.products_db)}"
    )


def check_legacy_table(cfg: Config, ctx: Context) -> Iterator[Check]:
    if not _on_disk(cfg.products_db) or not Path(cfg.products_db).exists():
        return
    try:
        with open_products_at(cfg.products_db, readonly=True) as p:
            legacy = p.has_table("hdf5_file_index")
    except IngestError as e:
        yield Check("FAIL", "products db", str(e))
        return
    if legacy:
        yield Check(
            "FAIL",
            "products db",
            "contains the legacy hdf5_file_index table; run "
            "`dsa110-ingest migrate --dry-run`, then `migrate`",
        )
    else:
        yield Check("OK", "products db", "no hdf5_file_index table")


def check_strays(cfg: Config, ctx: Context) -> Iterator[Check]:
    strays = stray_databases(cfg, ctx.cwd)
    if strays:
        yield Check(
            "WARN",
            "stray databases",
            "found "
            + ", ".join(map(str, strays))
            + "; not used by this configuration: inspect, migrate or delete them",
        )
    else:
        yield Check("OK", "stray databases", "none in the usual wrong places")


def _watched_dirs(cfg: Config) -> int:
    n = 0
    for loc in cfg.storage_locations:
        if loc.path.is_dir() and os.access(loc.path, os.R_OK | os.X_OK):
            n += 1 + (sum(1 for _ in os.walk(loc.path)) - 1 if loc.recursive else 0)
    return n


def check_locations(cfg: Config, ctx: Context) -> Iterator[Check]:
    if not cfg.storage_locations:
        yield Check("FAIL", "storage locations", "none configured: add [[storage_locations]]")
    for loc in cfg.storage_locations:
        name = f"location {loc.name}"
        if not loc.path.is_dir():
            yield Check("FAIL", name, f"{loc.path} does not exist; mount or create it")
            continue
        if not os.access(loc.path, os.R_OK | os.X_OK):
            yield Check("FAIL", name, f"{loc.path} is not readable by this user")
            continue
        mode, fstype = choose_mode(loc, ctx.mounts)
        level = "WARN" if (mode == "inotify" and needs_polling(fstype)) else "OK"
        hint = (
            '; inotify cannot see remote writes there: set watch = "poll"'
            if level == "WARN"
            else ""
        )
        yield Check(level, name, f"{loc.path}: {fstype}, watch {mode}{hint}")


def check_inotify(cfg: Config, ctx: Context) -> Iterator[Check]:
    watches = _read_int("/proc/sys/fs/inotify/max_user_watches")
    queued = _read_int("/proc/sys/fs/inotify/max_queued_events")
    if watches is not None:
        n_dirs = _watched_dirs(cfg)
        ok = watches >= 2 * n_dirs + 1024
        yield Check(
            "OK" if ok else "WARN",
            "inotify watches",
            f"max_user_watches = {watches} for {n_dirs} watched folders"
            + ("" if ok else "; raise fs.inotify.max_user_watches"),
        )
    if queued is not None:
        ok = queued >= 16384
        yield Check(
            "OK" if ok else "WARN",
            "inotify queue",
            f"max_queued_events = {queued}"
            + (
                ""
                if ok
                else "; raise fs.inotify.max_queued_events to >= 16384 (overflows are "
                "recovered by reconcile, but cost a rescan)"
            ),
        )


def check_converter(cfg: Config, ctx: Context) -> Iterator[Check]:
    if not cfg.convert.enabled:
        yield Check("OK", "converter", "conversion disabled ([convert] enabled = false)")
        return
    problems = check_available(cfg)
    for p in problems:
        yield Check("FAIL", "converter", p)
    if not problems:
        yield Check("OK", "converter", f"backend {cfg.convert.backend!r} is installed")


def check_executor(cfg: Config, ctx: Context) -> Iterator[Check]:
    """With executor = "dask": the scheduler answers, workers offer the conversion
    resource, and each worker shares output_dir with this host (a probe file both ways)."""
    c = cfg.convert
    if c.executor != "dask":
        yield Check("OK", "executor", f"{c.executor} (child processes on this host)")
        return
    try:
        from dsa110_ingest.convert import dask_executor as dx
    except ConfigError as e:
        yield Check("FAIL", "executor", str(e))
        return
    try:
        n_slots, rows = dx.probe(c)
    except (*dx.UNREACHABLE, ValueError) as e:
        yield Check(
            "FAIL", "executor", f"dask scheduler {dx.where(c)} unreachable: {e!r}; start it"
        )
        return
    if not rows:
        yield Check("WARN", "executor", f"dask at {dx.where(c)}: no workers connected yet")
        return
    yield (
        Check("OK", "executor", f"dask at {dx.where(c)}: {len(rows)} worker(s), {n_slots} slot(s)")
        if n_slots
        else Check(
            "FAIL",
            "executor",
            f"none of the {len(rows)} worker(s) at {dx.where(c)} offers the resource "
            f'{c.dask_resource!r}: start them with --resources "{c.dask_resource}=1"',
        )
    )
    for addr, host, err in rows:
        yield (
            Check(
                "FAIL",
                f"worker {addr}",
                f"on {host}: {err}; output_dir {c.output_dir} must be storage shared by "
                "the workers and this host, at the same path",
            )
            if err
            else Check("OK", f"worker {addr}", f"on {host}: shares {c.output_dir}")
        )


def check_output_disk(cfg: Config, ctx: Context) -> Iterator[Check]:
    out_dir = cfg.convert.output_dir
    if not cfg.convert.enabled:
        yield Check("OK", "output disk", f"not used: conversion disabled ({out_dir})")
        return
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    level = "FAIL" if free < FREE_FAIL else "WARN" if free < FREE_WARN else "OK"
    detail = f"{free / GIB:.0f} GiB free for {out_dir}"
    if level == "FAIL":
        detail += (
            f", below the {FREE_FAIL / GIB:.0f} GiB failure threshold: one group's "
            "Measurement Set (~5 GB) may not fit and conversions fail"
        )
    elif level == "WARN":
        detail += (
            f", below the {FREE_WARN / GIB:.0f} GiB warning threshold (a day of Measurement "
            "Sets: 288 groups of ~5 GB): the disk fills within a day"
        )
    if level != "OK":
        detail += "; free space there, or set [convert] output_dir to a larger disk"
    yield Check(level, "output disk", detail)


def check_systemd_unit(cfg: Config, ctx: Context) -> Iterator[Check]:
    """An installed unit (with its drop-ins) lets through what the config names."""
    from dsa110_ingest.unit_fit import installed_unit_problems

    found = installed_unit_problems(cfg, ctx.units)
    if found is not None:
        unit, problems = found
        yield from (Check("WARN", "systemd unit", p) for p in problems)
        if not problems:
            yield Check("OK", "systemd unit", f"{unit} lets through the hosts and paths configured")


def check_integrity_both(cfg: Config, ctx: Context) -> Iterator[Check]:
    yield from check_integrity("hdf5 db integrity", cfg.hdf5_db, open_index_at)
    yield from check_integrity("products db integrity", cfg.products_db, open_products_at)


def check_daemon(cfg: Config, ctx: Context) -> Iterator[Check]:
    from dsa110_ingest.service import daemon_status

    if not index_exists(cfg):
        return
    try:
        status = daemon_status(cfg)
    except IngestError as e:  # a server database without tables yet, unreachable ...
        yield Check("WARN", "daemon", f"unknown: {e}")
        return
    age = status["heartbeat_age_seconds"]
    seen = "no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago"
    if status["state"] == "running":
        yield Check("OK", "daemon", f"running: pid {status['pid']}, {seen}")
    else:
        yield Check(
            "WARN",
            "daemon",
            f"{status['state']} ({seen}); is the service running? systemctl status dsa110-ingest",
        )


def check_node(cfg: Config, ctx: Context) -> Iterator[Check]:
    """No configured location is another node's in the index (the daemon would refuse)."""
    from dsa110_ingest.nodes import NodeConflictError, check_locations

    if not index_exists(cfg):
        return
    try:
        with open_index_at(cfg.hdf5_db, readonly=True) as db:
            check_locations(db, cfg)
    except NodeConflictError as e:
        yield Check("FAIL", "node", str(e))
        return
    except IngestError:
        return  # unreadable: the integrity check says why
    yield Check("OK", "node", f"{cfg.node!r}: no configured location belongs to another node")


def check_output_claim(cfg: Config, ctx: Context) -> Iterator[Check]:
    """The output_dir's ownership claim names this index (convert/ownership.py); read
    only: the first conversion (or `claim-output`) makes it."""
    from dsa110_ingest.convert.ownership import verdict

    if not cfg.convert.enabled:
        return
    index_id = None
    if index_exists(cfg):
        # unreadable: the integrity check says why
        with contextlib.suppress(IngestError), open_index_at(cfg.hdf5_db, readonly=True) as db:
            index_id = db.index_id()
    level, detail = verdict(cfg, index_id)
    yield Check(level, "output_dir owner", detail)


CHECKS: tuple[Callable[[Config, Context], Iterable[Check]], ...] = (
    check_config,
    check_db_paths,
    check_legacy_table,
    check_strays,
    check_locations,
    check_inotify,
    check_converter,
    check_executor,
    check_output_disk,
    check_systemd_unit,
    check_output_claim,
    check_integrity_both,
    check_node,
    check_daemon,
)


def run_checks(cfg: Config, cwd: Path, mounts: str = "/proc/self/mounts") -> list[Check]:
    ctx = Context(cwd, mounts)
    return [c for check in CHECKS for c in check(cfg, ctx)]
