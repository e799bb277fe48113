"""``dsa110-ingest retry GROUP_ID``: a failed group back into the conversion queue."""

from __future__ import annotations

import argparse

from dsa110_ingest.config import Config

NAME = "retry"
HELP = "put a failed group back in the conversion queue"
DESCRIPTION = (
    "The running daemon converts it again; without a daemon, use `dsa110-ingest convert GROUP_ID`."
)
EXIT_CODES = {
    0: "queued again, or nothing to do (the group is not failed)",
    1: "the group has no conversion job (unknown, or not complete)",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("group_id", metavar="GROUP_ID", help="e.g. 2025-10-02T00:12:00")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.convert.cli import retry

    return retry(cfg, args.group_id)
