"""``dsa110-ingest doctor``: check an installation; each check OK, WARN or FAIL with the fix."""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dsa110_ingest.config import Config
from dsa110_ingest.db.hdf5 import Hdf5DB
from dsa110_ingest.db.products import ProductsDB
from dsa110_ingest.errors import IngestError
from dsa110_ingest.ingest.watcher import choose_mode, mount_of, needs_polling

GIB = 1024**3
# a real group's MS is ~5 GB; below a day of them (288) the output fills within hours
FREE_WARN = 300 * 5 * GIB
FREE_FAIL = 5 * GIB
HEARTBEAT_STALE_S = 120
DB_NAMES = ("hdf5.sqlite3", "products.sqlite3")


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


def check_db_path(label: str, path: Path, mounts: str) -> Iterator[Check]:
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


def check_integrity(label: str, path: Path, opener: type) -> Iterator[Check]:
    if not path.exists():
        yield Check("WARN", label, f"{path} does not exist yet (created at first start)")
        return
    try:
        with opener(path, readonly=True) as db:
            res = db.integrity()
    except (IngestError, sqlite3.Error) as e:
        yield Check("FAIL", label, f"cannot open {path}: {e}")
        return
    if res == "ok":
        yield Check("OK", label, "PRAGMA integrity_check: ok")
    else:
        yield Check("FAIL", label, f"PRAGMA integrity_check: {res}; restore from a backup")


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
    real = {cfg.hdf5_db.resolve(), cfg.products_db.resolve()}
    found = []
    for d in places:
        for name in DB_NAMES:
            f = d / name
            if f.exists() and f.resolve() not in real:
                found.append(f)
    return found


def run_checks(cfg: Config, cwd: Path, mounts: str = "/proc/self/mounts") -> list[Check]:
    out: list[Check] = [Check("OK", "config", f"valid ({cfg.config_file or 'embedded default'})")]
    out += check_db_path("hdf5 db path", cfg.hdf5_db, mounts)
    out += check_db_path("products db path", cfg.products_db, mounts)
    out.append(Check("OK", "databases distinct", f"{cfg.hdf5_db} != {cfg.products_db}"))

    if cfg.products_db.exists():
        try:
            with ProductsDB(cfg.products_db, readonly=True) as p:
                legacy = p.has_table("hdf5_file_index")
        except IngestError as e:
            legacy = False
            out.append(Check("FAIL", "products db", str(e)))
        out.append(
            Check(
                "FAIL",
                "products db",
                "contains the legacy hdf5_file_index table; run "
                "`dsa110-ingest migrate --dry-run`, then `migrate`",
            )
            if legacy
            else Check("OK", "products db", "no hdf5_file_index table")
        )
    strays = stray_databases(cfg, cwd)
    out.append(
        Check(
            "WARN",
            "stray databases",
            "found "
            + ", ".join(map(str, strays))
            + "; not used by this configuration: inspect, migrate or delete them",
        )
        if strays
        else Check("OK", "stray databases", "none in the usual wrong places")
    )

    if not cfg.storage_locations:
        out.append(Check("FAIL", "storage locations", "none configured: add [[storage_locations]]"))
    n_dirs = 0
    for loc in cfg.storage_locations:
        name = f"location {loc.name}"
        if not loc.path.is_dir():
            out.append(Check("FAIL", name, f"{loc.path} does not exist; mount or create it"))
            continue
        if not os.access(loc.path, os.R_OK | os.X_OK):
            out.append(Check("FAIL", name, f"{loc.path} is not readable by this user"))
            continue
        mode, fstype = choose_mode(loc, mounts)
        n_dirs += 1 + (sum(1 for _ in os.walk(loc.path)) - 1 if loc.recursive else 0)
        level = "WARN" if (mode == "inotify" and needs_polling(fstype)) else "OK"
        hint = (
            '; inotify cannot see remote writes there: set watch = "poll"'
            if level == "WARN"
            else ""
        )
        out.append(Check(level, name, f"{loc.path}: {fstype}, watch {mode}{hint}"))

    watches = _read_int("/proc/sys/fs/inotify/max_user_watches")
    queued = _read_int("/proc/sys/fs/inotify/max_queued_events")
    if watches is not None:
        ok = watches >= 2 * n_dirs + 1024
        out.append(
            Check(
                "OK" if ok else "WARN",
                "inotify watches",
                f"max_user_watches = {watches} for {n_dirs} watched folders"
                + ("" if ok else "; raise fs.inotify.max_user_watches"),
            )
        )
    if queued is not None:
        ok = queued >= 16384
        out.append(
            Check(
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
        )

    out_dir = cfg.convert.output_dir
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    level = "FAIL" if free < FREE_FAIL else "WARN" if free < FREE_WARN else "OK"
    out.append(
        Check(
            level,
            "output disk",
            f"{free / GIB:.0f} GiB free for {out_dir}"
            + ("" if level == "OK" else " (a real group's MS is ~5 GB); free space"),
        )
    )

    out += check_integrity("hdf5 db integrity", cfg.hdf5_db, Hdf5DB)
    out += check_integrity("products db integrity", cfg.products_db, ProductsDB)

    if cfg.hdf5_db.exists():
        with Hdf5DB(cfg.hdf5_db, readonly=True) as db:
            hb = db.heartbeat()
        if hb is None:
            out.append(Check("WARN", "daemon", "has never run against this database"))
        else:
            age = time.time() - hb["updated_at"]
            out.append(
                Check(
                    "OK" if age < HEARTBEAT_STALE_S else "WARN",
                    "daemon",
                    f"last heartbeat {age:.0f} s ago (pid {hb['pid']} on "
                    f"{hb['hostname']})"
                    + (
                        ""
                        if age < HEARTBEAT_STALE_S
                        else "; is the service running? systemctl status dsa110-ingest"
                    ),
                )
            )
    return out


def main(cfg: Config, args: argparse.Namespace) -> int:
    checks = run_checks(cfg, Path.cwd())
    for c in checks:
        print(c.line())
    fails = sum(c.level == "FAIL" for c in checks)
    warns = sum(c.level == "WARN" for c in checks)
    print(f"doctor: {fails} FAIL, {warns} WARN, {len(checks) - fails - warns} OK", file=sys.stderr)
    return 1 if fails else 0
