"""``dsa110-ingest run``: the daemon, or one backfill pass with ``--rescan``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dsa110_ingest.cli._common import EXIT_ERROR, error_line, host_port
from dsa110_ingest.config import Config

NAME = "run"
HELP = "run the ingest daemon (or one backfill pass with --rescan)"
DESCRIPTION = (
    "Watch every storage location, index, group and convert, until SIGTERM. "
    "With --rescan: index everything present once, drain the conversions, exit."
)
EXIT_CODES = {
    0: "stopped cleanly on SIGTERM or SIGINT; with --rescan: the pass and every conversion "
    "it ran succeeded",
    1: "the daemon stopped on an error, or refused to start (e.g. the conversion backend "
    "is not installed); with --rescan also: a storage location is missing or a "
    "conversion it ran failed",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--rescan", action="store_true", help="one pass over every storage location, then exit"
    )
    s.add_argument(
        "--no-convert", action="store_true", help="index and group only, convert nothing"
    )
    s.add_argument(
        "--metrics-listen",
        type=host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (overrides metrics_listen)",
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.convert.backends import require_available
    from dsa110_ingest.sdnotify import Notifier
    from dsa110_ingest.service import Service

    if args.metrics_listen:
        cfg = cfg.with_overrides(metrics_listen=args.metrics_listen)
    convert = not args.no_convert and cfg.convert.enabled
    if convert:
        # a converter that cannot run is an install problem: say so before any work
        # instead of failing (and retrying) every group
        require_available(cfg)
    notifier = Notifier.from_env(os.environ, os.getpid())
    svc = Service(cfg, convert=convert, notifier=notifier)
    if not args.rescan:
        return svc.run()
    failed_before = _failed_conversions(cfg)
    started = time.time()
    rc = svc.rescan(progress=sys.stderr.isatty())
    failed = _failed_conversions(cfg) - failed_before
    write_rescan_note(cfg, started, EXIT_ERROR if failed > 0 else rc)
    if failed > 0:
        error_line(
            f"{failed} conversion(s) failed in this rescan; `dsa110-ingest groups --state "
            "failed` shows why, `dsa110-ingest retry GROUP` queues one again"
        )
        return EXIT_ERROR
    return rc


def _failed_conversions(cfg: Config) -> int:
    """Groups whose conversion gave up, from the DB: the rescan's own report only prints."""
    from dsa110_ingest.db import index_exists, open_index

    if not index_exists(cfg):
        return 0
    with open_index(cfg, readonly=True) as db:
        return int(db.state_counts()[1].get("failed", 0))


# what the last `run --rescan` did, for `status` (a rescan writes no daemon heartbeat)
RESCAN_NOTE = "last-rescan.json"


def write_rescan_note(cfg: Config, started: float, rc: int) -> None:
    from dsa110_ingest.statedir import open_private

    note = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": started,
        "ended_at": time.time(),
        "exit_code": rc,
    }
    path = cfg.state_dir / RESCAN_NOTE
    tmp = path.with_name(f".{RESCAN_NOTE}.{os.getpid()}")
    with contextlib.suppress(OSError):  # only a note: never fails the rescan
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, json.dumps(note).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)


def read_rescan_note(state_dir: Path) -> dict[str, Any] | None:
    try:
        note = json.loads((state_dir / RESCAN_NOTE).read_text())
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None
