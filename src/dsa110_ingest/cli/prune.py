"""``dsa110-ingest prune``: make both indexes agree with the disk. Never deletes data."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dsa110_ingest.config import Config
from dsa110_ingest.db import backend_of, open_index, open_products
from dsa110_ingest.nodes import this_nodes_paths, under

NAME = "prune"
HELP = "mark vanished subband files and Measurement Sets (never deletes data)"
DESCRIPTION = (
    "Files no longer on disk get stored = 0; Measurement Sets no longer on "
    "disk get status 'missing' in ms_index, and `groups` shows them as ms-missing."
)
EXIT_CODES: dict[int, str] = {}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--dry-run", action="store_true", help="list what would be marked, change nothing"
    )
    s.add_argument(
        "--delete-rows",
        action="store_true",
        help="delete ms_index rows of missing MS instead of status='missing'",
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    verb = "would mark" if args.dry_run else "marked"
    with open_index(cfg, readonly=args.dry_run) as hdf5:
        # on a shared index, another node's files are not on this host's disks
        mine = this_nodes_paths(hdf5, cfg)
        gone = [p for p in hdf5.stored_paths() if mine(p) and not os.path.exists(p)]
        for p in gone:
            print(f"prune: file gone: {p}")
        if gone and not args.dry_run:
            with hdf5.transaction("pruning vanished files"):
                hdf5.mark_missing(gone)
    print(f"prune: {verb} {len(gone)} vanished subband file(s) stored = 0", file=sys.stderr)

    if backend_of(cfg.products_db) == "sqlite" and not Path(cfg.products_db).exists():
        return 0
    with open_products(cfg, readonly=args.dry_run) as products:
        rows = [r for r in products.all_ms() if r.status != "missing" or args.delete_rows]
        if backend_of(cfg.products_db) != "sqlite":  # shared: only this node's output_dir
            rows = [r for r in rows if under(r.path, [str(cfg.convert.output_dir)])]
        missing = [r.path for r in rows if not os.path.exists(r.path)]
        now = time.time()
        for p in missing:
            print(f"prune: MS gone: {p}")
            if args.dry_run:
                continue
            if args.delete_rows:
                products.delete(p)
            else:
                products.set_status(p, "missing", now)
    what = "deleted the rows of" if args.delete_rows else "set status = 'missing' on"
    if args.dry_run:
        what = "would " + (
            "delete the rows of" if args.delete_rows else "set status = 'missing' on"
        )
    print(f"prune: {what} {len(missing)} vanished Measurement Set(s)", file=sys.stderr)
    return 0
