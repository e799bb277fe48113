"""``dsa110-ingest doctor``: check an installation; each check OK, WARN or FAIL with the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsa110_ingest.cli._common import EXIT_ERROR, EXIT_OK, print_text, say
from dsa110_ingest.config import Config

NAME = "doctor"
HELP = "check the installation; non-zero exit on any FAIL"
DESCRIPTION = (
    "Config, database paths and integrity, storage locations, inotify "
    "limits, the conversion backend, free disk, the daemon's heartbeat."
)
EXIT_CODES = {
    0: "no check FAILed (WARNs allowed)",
    1: "at least one check FAILed (or the config itself is invalid)",
}


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.doctor import run_checks

    checks = run_checks(cfg, Path.cwd())
    for c in checks:
        print_text(c.line())
    fails = sum(c.level == "FAIL" for c in checks)
    warns = sum(c.level == "WARN" for c in checks)
    say(f"doctor: {fails} FAIL, {warns} WARN, {len(checks) - fails - warns} OK")
    return EXIT_ERROR if fails else EXIT_OK
