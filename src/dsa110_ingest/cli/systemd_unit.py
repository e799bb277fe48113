"""``dsa110-ingest systemd-unit``: the systemd unit shipped in the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsa110_ingest.cli._common import EXIT_OK
from dsa110_ingest.config import Config

NAME = "systemd-unit"
HELP = "print the systemd unit for this installation"
DESCRIPTION = (
    "Install with: dsa110-ingest systemd-unit | sudo tee "
    "/etc/systemd/system/dsa110-ingest.service. Edit ReadWritePaths= to the MS output "
    "folder."
)
EXIT_CODES: dict[int, str] = {}
NEEDS_CONFIG = False
SHIPPED_EXEC = "/opt/dsa110-ingest/.venv/bin/dsa110-ingest"


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--exec",
        dest="executable",
        metavar="PATH",
        help="the dsa110-ingest executable for ExecStart= (default: this installation's, "
        f"else {SHIPPED_EXEC})",
    )


def this_executable() -> str:
    exe = Path(sys.executable).with_name("dsa110-ingest")
    return str(exe) if exe.is_file() else SHIPPED_EXEC


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    from dsa110_ingest import data

    unit = data.read(data.SYSTEMD_UNIT)
    print(unit.replace(SHIPPED_EXEC, args.executable or this_executable()), end="")
    return EXIT_OK
