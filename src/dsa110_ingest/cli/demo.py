"""``dsa110-ingest demo``: simulated correlator + daemon + conversion, end to end."""

from __future__ import annotations

import argparse

from dsa110_ingest.cli._common import positive_int
from dsa110_ingest.config import Config

NAME = "demo"
HELP = "simulated correlator + daemon + conversion, end to end"
DESCRIPTION = (
    "Writes simulated groups into DIR/incoming while a real daemon indexes "
    "and converts them; needs the 'convert' extra."
)
EXIT_CODES: dict[int, str] = {}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--dir", default="demo-run", help="working folder, emptied first (default %(default)s)"
    )
    s.add_argument(
        "--groups", type=positive_int, default=3, help="observations to simulate (default 3)"
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.tools import demo

    return int(demo.main(cfg, args))
