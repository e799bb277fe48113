"""``dsa110-ingest events``: group events as JSON lines, optionally followed."""

from __future__ import annotations

import argparse
import json

from dsa110_ingest.cli._common import EXIT_OK, non_negative_int
from dsa110_ingest.config import Config

NAME = "events"
HELP = "print group events, one JSON object a line"
EXIT_CODES: dict[int, str] = {}


DESCRIPTION = "A consumer stores the last id it handled and resumes with --after ID."


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    s.add_argument(
        "--after",
        type=non_negative_int,
        default=0,
        metavar="ID",
        help="only events with a larger id (default 0: all)",
    )
    s.add_argument("--json", action="store_true", help="JSON lines (the default and only format)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.db import backend_of, open_index
    from dsa110_ingest.events import event_dict, follow

    # a SQLite follower may start before the daemon (it creates the file); a server
    # database is only read: a role with SELECT alone can follow
    readonly = not args.follow or backend_of(cfg.hdf5_db) != "sqlite"
    with open_index(cfg, readonly=readonly) as db:
        if args.follow:
            for e in follow(db, args.after):
                print(json.dumps(e, sort_keys=True), flush=True)
        else:
            last = args.after
            while rows := db.events_after(last):
                for r in rows:
                    print(json.dumps(event_dict(r), sort_keys=True))
                    last = r.id
    return EXIT_OK
