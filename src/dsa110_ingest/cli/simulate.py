"""``dsa110-ingest simulate``: realistic DSA-110 subband groups for tests and demos."""

from __future__ import annotations

import argparse

from dsa110_ingest.cli._common import (
    EXIT_OK,
    abs_path,
    iso_time,
    non_negative_float,
    positive_int,
    say,
    subband_list,
)
from dsa110_ingest.config import Config

NAME = "simulate"
HELP = "write simulated DSA-110 subband groups"
DESCRIPTION = (
    "Write GROUPS observations of 16 subband files each, one per 5-minute "
    "cadence from --start, the way the correlator's writers do."
)
EXIT_CODES: dict[int, str] = {}
NEEDS_CONFIG = False  # writes files only; a broken config must not stop it


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created)")
    s.add_argument("--groups", type=positive_int, required=True, help="number of observations")
    s.add_argument(
        "--start",
        type=iso_time,
        default="2025-10-02T00:00:00",
        metavar="TIME",
        help="first observation, ISO 8601 UTC (default %(default)s)",
    )
    s.add_argument(
        "--jitter-seconds",
        type=non_negative_float,
        default=2.0,
        help="spread of the file-name timestamps within a group (default %(default)s)",
    )
    s.add_argument("--nants", type=positive_int, default=8, help="antennas (default %(default)s)")
    s.add_argument(
        "--nchan", type=positive_int, default=8, help="channels per subband (default %(default)s)"
    )
    s.add_argument(
        "--ntimes", type=positive_int, default=24, help="integrations (default %(default)s)"
    )
    s.add_argument(
        "--missing",
        type=subband_list,
        default=[],
        metavar="LIST",
        help="subbands to leave out, e.g. 3,7",
    )
    s.add_argument(
        "--interval",
        type=non_negative_float,
        default=0.0,
        help="seconds between groups (0: as fast as possible)",
    )
    s.add_argument(
        "--mode",
        choices=["inplace", "tmp_rename", "rsync"],
        default="inplace",
        help="how each file arrives: written in place, written as .tmp and renamed, or "
        "as rsync does (default %(default)s)",
    )
    s.add_argument(
        "--time-offset-seconds",
        type=float,
        default=0.0,
        help="shift the subbands' integrations by -X .. +X s (spread over sb00..sb15)",
    )


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    from dsa110_ingest.tools.simulate import SimParams, simulate, spread_offsets

    p = SimParams(
        nants=args.nants,
        nchan=args.nchan,
        ntimes=args.ntimes,
        time_offsets_s=spread_offsets(args.time_offset_seconds),
    )
    out = abs_path(args.out)
    plans = simulate(
        out,
        args.groups,
        args.start,
        args.jitter_seconds,
        params=p,
        missing=args.missing,
        realtime_interval_s=args.interval,
        mode=args.mode,
    )
    n = sum(len(pl.files) for pl in plans)
    say(f"simulate: wrote {n} files in {len(plans)} groups to {out}")
    return EXIT_OK
