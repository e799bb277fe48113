"""``dsa110-ingest claim-output``: show, make or take over this index's claim on the
output_dir (convert/ownership.py; docs/operations.md, "output_dir ownership")."""

from __future__ import annotations

import argparse

import structlog

from dsa110_ingest.cli._common import PROG, print_text, say
from dsa110_ingest.config import Config
from dsa110_ingest.errors import OutputClaimError

NAME = "claim-output"
HELP = "show or make this index's claim on [convert] output_dir; --force takes it over"
DESCRIPTION = (
    "A daemon converts only into an output_dir whose claim file (.dsa110-ingest-owner) "
    "names its index, so that two deployments with separate indexes never convert the "
    "same observation twice. Without options: make the claim when there is none and say "
    "whose it is. --force: replace another index's claim (or an unusable one) with this "
    "index's, e.g. after rebuilding the index from scratch; a daemon of the replaced "
    "index stops converting there within 30 s. --force refuses while that index's "
    "daemon still runs on this host (its state_dir lock is held): stop it first."
)
EXIT_CODES = {
    1: "another index holds the claim, or the claim file is unusable (use --force once "
    "that index is gone for good), or the output_dir cannot be written; --force: the "
    "claiming index's daemon still runs on this host (stop it first), or whether it runs "
    "cannot be told (its lock is unreadable to this user: run as its user or root)",
}

log = structlog.get_logger("dsa110_ingest.cli")


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--force",
        action="store_true",
        help="take the claim over from another (retired or rebuilt) index",
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.convert.claimfile import claim_path, read_claim
    from dsa110_ingest.convert.ownership import (
        Identity,
        ensure_claim,
        live_holder,
        still_running,
        take_over,
    )
    from dsa110_ingest.db import open_index

    out = cfg.convert.output_dir
    with open_index(cfg) as db:  # made and migrated when new: it gets its identity
        mine = Identity.of(cfg, db.index_id() or "")
    if args.force:
        try:
            current = read_claim(claim_path(out))
        except OutputClaimError:
            current = None
        if current is None or current.index_id != mine.index_id:
            try:
                live = live_holder(current, cfg)
            except OutputClaimError as e:
                say(f"claim-output: {e}", "error")
                return 1
            if current is not None and live is not None:
                say(f"claim-output: {still_running(out, current, *live)}", "error")
                return 1
            made, before = take_over(out, mine, f"{PROG} claim-output --force")
            log.warning(
                "convert.output_dir_taken_over",
                output_dir=str(out),
                index_id=made.index_id,
                replaced=before,
            )
            print_text(
                f"claim-output: {out} is now claimed by this index ({made.describe()}); "
                f"it replaced {before}. A daemon of the replaced index stops converting "
                "there within 30 s; this index's daemon, if it waits on the claim, starts "
                "converting within 5 s"
            )
            return 0
    try:
        claim, made_now = ensure_claim(out, mine, f"{PROG} claim-output")
    except OutputClaimError as e:
        say(f"claim-output: {e}", "error")
        return 1
    how = "claimed now" if made_now else "already claimed"
    print_text(f"claim-output: {out} is {how} by this index: {claim.describe()}")
    return 0
