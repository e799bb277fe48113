"""``dsa110-ingest index-hdf5 DIR``: index one folder now, in the foreground."""

from __future__ import annotations

import argparse
import time

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
    from dsa110_ingest.service.report import batch_summary

    db = abs_path(args.hdf5_db) if args.hdf5_db else cfg.hdf5_db
    t0 = time.monotonic()
    result = index_hdf5_files(args.directory, db, config=cfg, recursive=args.recursive)
    batch_summary("index-hdf5", result, time.monotonic() - t0, hdf5_db=str(db))
    return EXIT_OK
