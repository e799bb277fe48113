"""``dsa110-ingest groups``: where is group X, and why."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from dsa110_ingest.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    iso_time,
    positive_int,
    print_json,
    print_text,
    say,
)
from dsa110_ingest.config import Config
from dsa110_ingest.naming import missing_subbands

NAME = "groups"
HELP = "list groups with their subbands, conversion state and last error"
DESCRIPTION = (
    "Groups ordered by observation time. A group whose Measurement Set "
    "`prune` marked missing shows conversion 'ms-missing'."
)
EXIT_CODES: dict[int, str] = {}

GROUP_STATES = ("collecting", "complete", "incomplete")
CONVERSION_STATES = ("pending", "running", "converted", "failed")
# a converted group whose Measurement Set `prune` found gone from disk
MS_MISSING = "ms-missing"


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--since", type=iso_time, metavar="TIME", help="observed at or after TIME (ISO 8601 UTC)"
    )
    s.add_argument(
        "--until", type=iso_time, metavar="TIME", help="observed at or before TIME (ISO 8601 UTC)"
    )
    s.add_argument(
        "--state",
        choices=(*GROUP_STATES, *CONVERSION_STATES, MS_MISSING),
        help="only groups in this group or conversion state",
    )
    s.add_argument("--limit", type=positive_int, metavar="N", help="at most N groups")
    s.add_argument("--json", action="store_true", help="a JSON array instead of a table")


def group_json(
    r: Any, files: list[Any], ms_status: str | None, rejected: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    conversion = r.convert_state
    if conversion == "converted" and ms_status in ("missing", None):
        conversion = MS_MISSING
    on_disk = [f for f in files if not f.missing]
    return {
        "group_id": r.group_id,
        "state": r.state,
        "n_subbands": r.n_subbands,
        "expected_subbands": r.expected_subbands,
        "n_conflicts": r.n_conflicts,
        "start_mjd": r.start_mjd,
        "end_mjd": r.end_mjd,
        "missing_subbands": missing_subbands((f.subband_num for f in on_disk), r.expected_subbands),
        "files": [f.path for f in on_disk],
        "files_gone": [f.path for f in files if f.missing],
        # files whose names place them in this group but that could not be indexed: the
        # answer to "why is sb04 missing"
        "rejected": rejected or [],
        "conversion": conversion,
        "attempts": r.attempts,
        "last_error": r.last_error,
        "ms_path": r.ms_path,
        "ms_status": ms_status,
        "first_seen_at": r.first_seen_at,
        "completed_at": r.completed_at,
    }


def _ms_statuses(products_db: Path | str, paths: list[str]) -> dict[str, str | None]:
    """ms_index status of each MS path. A path without a row (`prune --delete-rows`)
    counts as missing only when it is not on disk either."""
    from dsa110_ingest.db import backend_of, open_products_at

    def unrecorded(p: str) -> str | None:
        return "converted" if os.path.exists(p) else None

    if backend_of(products_db) == "sqlite" and not Path(products_db).exists():
        return {p: unrecorded(p) for p in paths}
    with open_products_at(products_db, readonly=True) as products:
        return {p: (row.status if (row := products.ms(p)) else unrecorded(p)) for p in paths}


def _rejected_by_group(cfg: Config, rejected: list[Any], rows: list[Any]) -> dict[str, list]:
    """Each rejected file whose name places it in one of ``rows`` (within the clustering
    tolerance of the group's span), by group."""
    from dsa110_ingest.errors import MisnamedFileError
    from dsa110_ingest.naming import NameParser, printable

    parser = NameParser(cfg.pattern, cfg.groups.expected_subbands)
    tol = cfg.groups.cluster_tolerance_seconds
    out: dict[str, list[dict[str, str]]] = {}
    for rf in rejected:
        try:
            name = parser.parse(rf.path, os.path.basename(rf.path))
        except MisnamedFileError:
            continue  # its name says no group
        ts = name.timestamp_unix
        for r in rows:
            if r.min_ts - tol <= ts <= r.max_ts + tol:
                out.setdefault(r.group_id, []).append(
                    {
                        "path": printable(rf.path),
                        "subband": name.subband_code,
                        "reason": rf.reason,
                        "detail": rf.detail,
                    }
                )
                break
    return out


def list_groups(cfg: Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    from dsa110_ingest.db import open_index
    from dsa110_ingest.times import iso_to_unix

    # ms-missing is a converted group seen through the products DB
    db_state = "converted" if args.state == MS_MISSING else args.state
    with open_index(cfg, readonly=True) as db:
        rows = db.list_groups(
            iso_to_unix(args.since) if args.since else None,
            iso_to_unix(args.until) if args.until else None,
            db_state,
            args.limit if args.state not in ("converted", MS_MISSING) else None,
        )
        files = db.files_of_groups([r.group_id for r in rows])
        waiting = [r for r in rows if r.n_subbands < r.expected_subbands]
        rejected = _rejected_by_group(cfg, db.rejected(), waiting) if waiting else {}
        stale = _stale_leases(cfg, db, rows)
    ms = _ms_statuses(cfg.products_db, [r.ms_path for r in rows if r.convert_state == "converted"])
    out = [
        group_json(r, files[r.group_id], ms.get(r.ms_path), rejected.get(r.group_id)) for r in rows
    ]
    for g in out:
        g["conversion_note"] = stale.get(g["group_id"])
    if args.state in ("converted", MS_MISSING):
        out = [g for g in out if g["conversion"] == args.state or g["state"] == args.state]
        out = out[: args.limit] if args.limit else out
    return out


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.times import iso_to_unix

    if args.since and args.until and iso_to_unix(args.since) > iso_to_unix(args.until):
        say(
            f"{PROG} groups: error: --since {args.since} is later than --until {args.until}: "
            f"no group can match; swap them (see `{PROG} groups --help`)",
            "error",
        )
        return EXIT_USAGE
    out = list_groups(cfg, args)
    if args.json:
        print_json(out)
        return EXIT_OK
    print_text(f"{'group_id':20} {'state':11} {'subbands':>8} {'conversion':11} {'tries':>5}  note")
    for g in out:
        if g["conversion"] == MS_MISSING:
            note = f"{g['ms_path']} is gone (prune); `dsa110-ingest convert --force` rewrites it"
        else:
            note = (
                g["conversion_note"]
                or g["last_error"]
                or (_missing_note(g) if g["missing_subbands"] else g["ms_path"] or "")
            )
        # subbands on disk, as the JSON's files/missing_subbands (n_subbands counts
        # members gone from disk since)
        on_disk = g["expected_subbands"] - len(g["missing_subbands"])
        print_text(
            f"{g['group_id']:20} {g['state']:11} {on_disk:>4}/{g['expected_subbands']:<3}"
            f" {g['conversion'] or '-':11} {g['attempts'] or 0:>5}  {note}"
        )
    return EXIT_OK


def _stale_leases(cfg: Config, db: Any, rows: list[Any]) -> dict[str, str]:
    """Running conversions whose converter is gone or whose lease expired: why, and when
    they are retried (leases.stale_note)."""
    from dsa110_ingest.leases import stale_note

    jobs = (db.job(r.group_id) for r in rows if r.convert_state == "running")
    c = cfg.convert
    notes = {
        j.group_id: stale_note(j, c.executor, max_attempts=c.max_attempts)
        for j in jobs
        if j is not None
    }
    return {gid: note for gid, note in notes.items() if note}


def _missing_note(g: dict[str, Any]) -> str:
    """``missing sb03,sb04 (sb04 rejected: truncated: ...)``: why, where the index knows."""
    why = [
        f"{r['subband']} rejected: {r['reason']}: {r['detail']}"
        for r in g["rejected"]
        if r["subband"] in g["missing_subbands"]
    ]
    gone = f"; {len(g['files_gone'])} gone from disk" if g["files_gone"] else ""
    return (
        "missing "
        + ",".join(g["missing_subbands"])
        + (f" ({'; '.join(why)})" if why else "")
        + gone
    )
