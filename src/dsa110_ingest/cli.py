"""``dsa110-ingest``: the command line. Parses arguments, builds the Config once, and
hands it down; the environment is read here and nowhere deeper."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsa110_ingest import logs
from dsa110_ingest.config import Config, describe, load_config
from dsa110_ingest.errors import ConfigError, IngestError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _abs(p: str) -> Path:
    # a path typed on the command line is relative to where it was typed
    return Path(p).expanduser().absolute()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsa110-ingest", description=__doc__)
    p.add_argument("--config", help="TOML config file (default: $DSA110_INGEST_CONFIG)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("config", help="print the effective settings and where each came from")

    s = sub.add_parser("index-hdf5", help="index one directory of subband files")
    s.add_argument("directory")
    s.add_argument("--hdf5-db", help="HDF5 DB path (default: configured)")
    s.add_argument("--recursive", action="store_true")

    s = sub.add_parser("run", help="run the ingest daemon (or one backfill pass with --rescan)")
    s.add_argument(
        "--rescan", action="store_true", help="one pass over every storage location, then exit"
    )
    s.add_argument("--no-convert", action="store_true", help="index and group only")
    s.add_argument("--metrics-listen", help="HOST:PORT for Prometheus metrics")

    s = sub.add_parser("groups", help="list groups")
    s.add_argument("--since", help="ISO UTC time")
    s.add_argument("--until", help="ISO UTC time")
    s.add_argument(
        "--state", help="collecting, complete, incomplete, pending, running, converted, failed"
    )
    s.add_argument("--limit", type=int)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("events", help="print group events, one JSON object a line")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    s.add_argument("--after", type=int, default=0, help="only events with a larger id")
    s.add_argument("--json", action="store_true", help="(default) JSON lines")

    s = sub.add_parser("status", help="files, groups, conversions, rejected files, heartbeat")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("simulate", help="write simulated DSA-110 subband groups")
    s.add_argument("--out", required=True)
    s.add_argument("--groups", type=int, required=True)
    s.add_argument("--start", default="2025-10-02T00:00:00")
    s.add_argument("--jitter-seconds", type=float, default=2.0)
    s.add_argument("--nants", type=int, default=8)
    s.add_argument("--nchan", type=int, default=8)
    s.add_argument("--ntimes", type=int, default=24)
    s.add_argument("--missing", default="", help="subbands to leave out, e.g. 3,7")
    s.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds between groups (0: as fast as possible)",
    )
    s.add_argument("--mode", choices=["inplace", "tmp_rename", "rsync"], default="inplace")
    s.add_argument(
        "--time-offset-seconds",
        type=float,
        default=0.0,
        help="shift the subbands' integrations by -X .. +X s (spread over sb00..sb15)",
    )

    s = sub.add_parser("convert", help="convert one group now, in the foreground")
    s.add_argument("group_id")
    s.add_argument("--force", action="store_true", help="convert even if already converted")

    s = sub.add_parser("retry", help="put a failed group back in the conversion queue")
    s.add_argument("group_id")

    s = sub.add_parser("demo", help="simulated correlator + daemon + conversion, end to end")
    s.add_argument("--dir", default="demo-run")
    s.add_argument("--groups", type=int, default=3)

    s = sub.add_parser("migrate", help="move hdf5_file_index out of a legacy products DB")
    s.add_argument("--products-db")
    s.add_argument("--hdf5-db")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument(
        "--keep-legacy", action="store_true", help="leave the legacy table in the products DB"
    )
    s.add_argument(
        "--no-queue",
        action="store_true",
        help="do not queue complete, never-converted old groups for conversion",
    )
    # tests only: SIGKILL itself at that point, to prove a rerun ends in the same state
    s.add_argument(
        "--stop-after", choices=["backup", "insert", "commit", "drop"], help=argparse.SUPPRESS
    )

    s = sub.add_parser("prune", help="mark vanished files and Measurement Sets")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument(
        "--delete-rows",
        action="store_true",
        help="delete ms_index rows of missing MS instead of status='missing'",
    )

    sub.add_parser("doctor", help="check the installation; non-zero exit on any FAIL")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, os.environ)
        if args.log_level or args.log_format:
            cfg = cfg.with_overrides(
                log_level=args.log_level or cfg.log_level,
                log_format=args.log_format or cfg.log_format,
            )
        logs.setup(
            cfg.log_level,
            cfg.log_format,
            cfg.log_file if args.cmd == "run" else None,
            env=os.environ,
        )
        return int(COMMANDS[args.cmd](cfg, args) or 0)
    except ConfigError as e:
        if args.cmd == "doctor":
            print(f"FAIL  config: {e}")
        print(f"dsa110-ingest: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except IngestError as e:
        print(f"dsa110-ingest: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dsa110-ingest events | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def cmd_config(cfg: Config, args: argparse.Namespace) -> int:
    for key, value, src in describe(cfg):
        print(f"{key} = {value!s}    # {src}")
    return EXIT_OK


def cmd_index_hdf5(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.api import index_hdf5_files

    db = _abs(args.hdf5_db) if args.hdf5_db else cfg.hdf5_db
    t0 = time.monotonic()
    r = index_hdf5_files(_abs(args.directory), db, config=cfg, recursive=args.recursive)
    _summary("index-hdf5", r, time.monotonic() - t0, db)
    return EXIT_OK


def _summary(what: str, r: Any, dt: float, db: Path) -> None:
    rate = r.seen / dt if dt > 0 else 0.0
    print(
        f"{what}: {r.indexed} indexed, {r.updated} updated, {r.moved} moved, "
        f"{r.unchanged} unchanged, {r.rejected} rejected, {r.missing} missing, "
        f"{len(r.deferred)} busy (still being written), "
        f"{sum(1 for e in r.events if e[0] == 'group.complete')} groups completed "
        f"in {dt:.2f} s ({rate:.0f} files/s); db {db}",
        file=sys.stderr,
    )
    for path, msg in r.rejections[:20]:
        print(f"  rejected {path}: {msg}", file=sys.stderr)
    if len(r.rejections) > 20:
        print(
            f"  ... and {len(r.rejections) - 20} more (see `dsa110-ingest status`)", file=sys.stderr
        )


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.sdnotify import Notifier
    from dsa110_ingest.service import Service

    if args.metrics_listen:
        cfg = cfg.with_overrides(metrics_listen=args.metrics_listen)
    notifier = Notifier.from_env(os.environ, os.getpid())
    svc = Service(cfg, convert=not args.no_convert, notifier=notifier)
    if args.rescan:
        return svc.rescan(progress=sys.stderr.isatty())
    return svc.run()


def _group_json(r: Any, files: list[Any]) -> dict[str, Any]:
    have = {f["subband_num"] for f in files}
    return {
        "group_id": r["group_id"],
        "state": r["state"],
        "n_subbands": r["n_subbands"],
        "expected_subbands": r["expected_subbands"],
        "n_conflicts": r["n_conflicts"],
        "start_mjd": r["start_mjd"],
        "end_mjd": r["end_mjd"],
        "missing_subbands": [f"sb{i:02d}" for i in range(r["expected_subbands"]) if i not in have],
        "files": [f["path"] for f in files],
        "conversion": r["convert_state"],
        "attempts": r["attempts"],
        "last_error": r["last_error"],
        "ms_path": r["ms_path"],
        "first_seen_at": r["first_seen_at"],
        "completed_at": r["completed_at"],
    }


def cmd_groups(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.db.hdf5 import Hdf5DB
    from dsa110_ingest.times import iso_to_unix

    with Hdf5DB(cfg.hdf5_db, readonly=True) as db:
        rows = db.list_groups(
            iso_to_unix(args.since) if args.since else None,
            iso_to_unix(args.until) if args.until else None,
            args.state,
            args.limit,
        )
        files = db.files_of_groups([r["group_id"] for r in rows])
        out = [_group_json(r, files[r["group_id"]]) for r in rows]
    if args.json:
        _print_json(out)
        return EXIT_OK
    print(f"{'group_id':20} {'state':11} {'subbands':>8} {'conversion':11} {'tries':>5}  note")
    for g in out:
        note = g["last_error"] or (
            ("missing " + ",".join(g["missing_subbands"]))
            if g["missing_subbands"]
            else g["ms_path"] or ""
        )
        print(
            f"{g['group_id']:20} {g['state']:11} {g['n_subbands']:>4}/{g['expected_subbands']:<3}"
            f" {g['conversion'] or '-':11} {g['attempts'] or 0:>5}  {note}"
        )
    return EXIT_OK


def cmd_events(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.db.hdf5 import Hdf5DB
    from dsa110_ingest.events import event_dict, follow

    with Hdf5DB(cfg.hdf5_db, readonly=not args.follow) as db:
        if args.follow:
            for e in follow(db, args.after):
                print(json.dumps(e, sort_keys=True), flush=True)
        else:
            last = args.after
            while rows := db.events_after(last):
                for r in rows:
                    print(json.dumps(event_dict(r), sort_keys=True))
                    last = r["id"]
    return EXIT_OK


def status_dict(cfg: Config) -> dict[str, Any]:
    from dsa110_ingest.db.hdf5 import Hdf5DB

    with Hdf5DB(cfg.hdf5_db, readonly=True) as db:
        st = db.counts()
        st["rejected_files"] = [
            {
                "path": r["path"],
                "reason": r["reason"],
                "detail": r["detail"],
                "attempts": r["attempts"],
            }
            for r in db.rejected()
        ]
        st["conversion_errors"] = [
            {k: r[k] for k in ("group_id", "state", "attempts", "last_error")}
            for r in db.troubled_jobs()
        ]
        hb = db.heartbeat()
        st["heartbeat"] = (
            None
            if hb is None
            else {
                "pid": hb["pid"],
                "hostname": hb["hostname"],
                "updated_at": hb["updated_at"],
                "age_seconds": round(time.time() - hb["updated_at"], 1),
                "status": json.loads(hb["status"] or "{}"),
            }
        )
    st["hdf5_db"] = str(cfg.hdf5_db)
    st["products_db"] = str(cfg.products_db)
    return st


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    st = status_dict(cfg)
    if args.json:
        _print_json(st)
        return EXIT_OK
    print(f"HDF5 DB:     {st['hdf5_db']}\nproducts DB: {st['products_db']}")
    for k in ("files", "groups", "conversions", "events"):
        parts = ", ".join(f"{n} {s}" for s, n in sorted(st[k].items())) or "none"
        print(f"{k + ':':13}{parts}")
    hb = st["heartbeat"]
    print(
        "daemon:      "
        + (
            "never ran"
            if hb is None
            else f"pid {hb['pid']} on {hb['hostname']}, last heartbeat {hb['age_seconds']} s ago"
        )
    )
    for r in st["rejected_files"][:50]:
        print(f"  rejected ({r['reason']}, {r['attempts']}x) {r['path']}: {r['detail']}")
    for j in st["conversion_errors"]:
        what = "failed" if j["state"] == "failed" else "retrying"
        print(f"  conversion {what} ({j['attempts']}x) {j['group_id']}: {j['last_error']}")
    return EXIT_OK


def cmd_simulate(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.simulate import SimParams, simulate, spread_offsets

    missing = [int(x) for x in args.missing.split(",") if x.strip()]
    p = SimParams(
        nants=args.nants,
        nchan=args.nchan,
        ntimes=args.ntimes,
        time_offsets_s=spread_offsets(args.time_offset_seconds),
    )
    plans = simulate(
        _abs(args.out),
        args.groups,
        args.start,
        args.jitter_seconds,
        params=p,
        missing=missing,
        realtime_interval_s=args.interval,
        mode=args.mode,
    )
    n = sum(len(pl.files) for pl in plans)
    print(f"simulate: wrote {n} files in {len(plans)} groups to {_abs(args.out)}", file=sys.stderr)
    return EXIT_OK


def _lazy(module: str) -> Callable[[Config, argparse.Namespace], int]:
    """A command whose module is imported only when it runs, keeping `status` and
    `events` quick to start."""

    def run(cfg: Config, args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"dsa110_ingest.{module}").main(cfg, args))

    return run


COMMANDS = {
    "config": cmd_config,
    "index-hdf5": cmd_index_hdf5,
    "run": cmd_run,
    "groups": cmd_groups,
    "events": cmd_events,
    "status": cmd_status,
    "simulate": cmd_simulate,
    "convert": _lazy("convert.cli"),
    "retry": _lazy("convert.cli"),
    "demo": _lazy("demo"),
    "migrate": _lazy("migrate"),
    "prune": _lazy("prune"),
    "doctor": _lazy("doctor"),
}
