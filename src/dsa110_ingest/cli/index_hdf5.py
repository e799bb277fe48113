"""``dsa110-ingest index-hdf5 DIR``: index one folder now, in the foreground."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import structlog

from dsa110_ingest import logs
from dsa110_ingest.cli._common import EXIT_OK, abs_path, existing_dir
from dsa110_ingest.config import Config

NAME = "index-hdf5"
HELP = "index one directory of subband files now"
DESCRIPTION = (
    "Read the header of every subband file in DIRECTORY and index it. A "
    "folder inside a configured storage location is indexed as that location."
)
EXIT_CODES: dict[int, str] = {}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("directory", type=existing_dir, help="the folder holding the subband files")
    s.add_argument(
        "--hdf5-db", metavar="FILE", help="index into this HDF5 DB (default: the configured one)"
    )
    s.add_argument("--recursive", action="store_true", help="also index sub-folders")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.api import index_hdf5_files

    db = abs_path(args.hdf5_db) if args.hdf5_db else cfg.hdf5_db
    t0 = time.monotonic()
    r = index_hdf5_files(args.directory, db, config=cfg, recursive=args.recursive)
    summary("index-hdf5", r, time.monotonic() - t0, db)
    return EXIT_OK


def summary(what: str, r: Any, dt: float, db: Any) -> None:
    rate = r.seen / dt if dt > 0 else 0.0
    completed = sum(1 for e in r.events if e[0] == "group.complete")
    if not logs.human():
        # off a terminal every stderr line is a JSON object; rejections are logged one by one
        structlog.get_logger("dsa110_ingest.cli").info(
            f"{what}.summary",
            seen=r.seen,
            indexed=r.indexed,
            updated=r.updated,
            moved=r.moved,
            unchanged=r.unchanged,
            rejected=r.rejected,
            missing=r.missing,
            busy=len(r.deferred),
            groups_completed=completed,
            seconds=round(dt, 3),
            files_per_s=round(rate),
            hdf5_db=str(db),
        )
        return
    print(
        f"{what}: {r.indexed} indexed, {r.updated} updated, {r.moved} moved, "
        f"{r.unchanged} unchanged, {r.rejected} rejected, {r.missing} missing, "
        f"{len(r.deferred)} busy (still being written), {completed} groups completed "
        f"in {dt:.2f} s ({rate:.0f} files/s); db {db}",
        file=sys.stderr,
    )
    for path, msg in r.rejections[:20]:
        print(f"  rejected {path}: {msg}", file=sys.stderr)
    if len(r.rejections) > 20:
        print(
            f"  ... and {len(r.rejections) - 20} more (see `dsa110-ingest status`)", file=sys.stderr
        )
