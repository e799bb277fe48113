"""``dsa110-ingest prune``: make both indexes agree with the disk. Never deletes data."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dsa110_ingest.cli._common import print_text, say
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
    _prune_files(cfg, dry_run=args.dry_run)
    if backend_of(cfg.products_db) != "sqlite" or Path(cfg.products_db).exists():
        _prune_ms(cfg, dry_run=args.dry_run, delete_rows=args.delete_rows)
    return 0


def _prune_files(cfg: Config, *, dry_run: bool) -> None:
    """Subband files no longer on disk: ``stored = 0`` (their rows and groups stay)."""
    with open_index(cfg, readonly=dry_run) as hdf5:
        # on a shared index, another node's files are not on this host's disks
        mine = this_nodes_paths(hdf5, cfg)
        missing = [p for p in hdf5.paths_on_disk() if mine(p) and not os.path.exists(p)]
        # marked by the daemon's reconcile (or an earlier prune): not news, but not nothing
        already = hdf5.counts().files.get("missing", 0)
        for p in missing:
            print_text(f"prune: file gone: {p}")
        if missing and not dry_run:
            with hdf5.transaction("pruning vanished files"):
                hdf5.mark_missing(missing)
    verb = "would mark" if dry_run else "marked"
    say(
        f"prune: {len(missing)} subband file(s) newly missing ({verb} stored = 0), "
        f"{already} already marked missing"
    )


def _prune_ms(cfg: Config, *, dry_run: bool, delete_rows: bool) -> None:
    """Measurement Sets no longer on disk: status 'missing', or their rows deleted."""
    with open_products(cfg, readonly=dry_run) as products:
        rows = [r for r in products.all_ms() if r.status != "missing" or delete_rows]
        if backend_of(cfg.products_db) != "sqlite":  # shared: only this node's output_dir
            rows = [r for r in rows if under(r.path, [str(cfg.convert.output_dir)])]
        missing = [r.path for r in rows if not os.path.exists(r.path)]
        now = time.time()
        for p in missing:
            print_text(f"prune: MS gone: {p}")
            if dry_run:
                continue
            if delete_rows:
                products.delete(p)
            else:
                products.set_status(p, "missing", now)
    if delete_rows:
        what = "would delete the rows of" if dry_run else "deleted the rows of"
    else:
        what = ("would " if dry_run else "") + "set status = 'missing' on"
    say(f"prune: {what} {len(missing)} vanished Measurement Set(s)")
