"""``dsa110-ingest convert GROUP_ID``: convert one group now, in the foreground."""

from __future__ import annotations

import argparse

from dsa110_ingest.config import Config

NAME = "convert"
HELP = "convert one group now, in the foreground"
DESCRIPTION = (
    "Same request, writes and events as the daemon's conversion; useful "
    "after fixing what made a group fail."
)
EXIT_CODES = {
    0: "converted, or nothing to do (already converted; --force converts again)",
    1: "the conversion failed, the group is unknown or incomplete, the backend is not "
    "installed, or another worker is converting it right now",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("group_id", metavar="GROUP_ID", help="e.g. 2025-10-02T00:12:00")
    s.add_argument(
        "--force",
        action="store_true",
        help="convert even if already converted (or incomplete), replacing the MS",
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.convert.backends import require_available
    from dsa110_ingest.convert.cli import convert_now

    require_available(cfg)
    return convert_now(cfg, args.group_id, args.force)
