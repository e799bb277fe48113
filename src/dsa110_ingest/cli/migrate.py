"""``dsa110-ingest migrate``: move ``hdf5_file_index`` out of a legacy products DB; with
``--to URI``, copy the SQLite index and products DB into PostgreSQL."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dsa110_ingest.cli._common import EXIT_OK, abs_path, say
from dsa110_ingest.config import Config, redact_db
from dsa110_ingest.errors import MigrationError

if TYPE_CHECKING:
    from dsa110_ingest.statedir import StateLock

NAME = "migrate"
HELP = "move hdf5_file_index out of a legacy products DB, or copy to PostgreSQL (--to)"
DESCRIPTION = (
    "Copies the legacy table into the HDF5 DB, verifies every row, then drops "
    "it from the products DB. Backups first; a rerun after a crash is safe. "
    "With --to postgresql://...: copies the SQLite index and products DB into "
    "PostgreSQL (ids kept), verifies every row; a rerun copies only what is missing."
)
EXIT_CODES = {
    0: "migrated, verified and (unless --keep-legacy) dropped; or nothing to migrate; "
    "with --to: copied (or nothing left to copy) and verified",
    1: "the migration failed or did not verify; nothing was changed; or another migrate "
    "of the same products DB is running (wait for it); with --to: the copy "
    "stopped or did not verify (the source is never changed; a rerun resumes)",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--products-db", metavar="FILE", help="legacy products DB (default: the configured one)"
    )
    s.add_argument("--hdf5-db", metavar="FILE", help="HDF5 DB (default: the configured one)")
    s.add_argument(
        "--dry-run", action="store_true", help="report what would happen, change nothing"
    )
    s.add_argument(
        "--keep-legacy", action="store_true", help="leave the legacy table in the products DB"
    )
    s.add_argument(
        "--no-queue",
        action="store_true",
        help="do not queue complete, never-converted old groups for conversion",
    )
    s.add_argument(
        "--to",
        metavar="URI",
        help="copy the (SQLite) index and products DB into this PostgreSQL database",
    )
    s.add_argument(
        "--products-to",
        metavar="URI",
        help="with --to: the products' (ms_index) PostgreSQL database, another database "
        "than --to's",
    )
    s.add_argument(
        "--node",
        help="with --to: the node that owns the copied storage locations (default: `node`)",
    )
    s.add_argument("--batch-rows", type=int, default=2000, help=argparse.SUPPRESS)
    s.add_argument("--stop-after-rows", type=int, help=argparse.SUPPRESS)
    # tests only: SIGKILL itself at that point, to prove a rerun ends in the same state
    s.add_argument(
        "--stop-after",
        choices=["backing-up", "backup", "insert", "commit", "drop"],
        help=argparse.SUPPRESS,
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.to:
        return _run_copy(cfg, args)
    if args.products_to or args.node:
        raise MigrationError("--products-to and --node go with --to URI")
    from dsa110_ingest.migrate import run_migration

    products = abs_path(args.products_db) if args.products_db else _sqlite_source(cfg, "products")
    hdf5 = abs_path(args.hdf5_db) if args.hdf5_db else _sqlite_source(cfg, "hdf5")
    if products == hdf5:
        raise MigrationError("--products-db and --hdf5-db are the same file")
    # a dry run changes nothing: it may run beside a real one (or a daemon)
    with contextlib.nullcontext() if args.dry_run else migrate_lock(products, hdf5):
        rep = run_migration(
            cfg,
            products,
            hdf5,
            dry_run=args.dry_run,
            keep_legacy=args.keep_legacy,
            queue=not args.no_queue,
            stop_after=args.stop_after,
        )
    if rep is None:
        say(
            f"migrate: {products} has no hdf5_file_index table: nothing to migrate "
            "(already migrated, or a new deployment)"
        )
        return EXIT_OK
    for gone in rep.partials_removed:
        say(f"migrate: removed {gone}, a partial backup of a killed run")
    for b in rep.backups:
        say(f"migrate: backup written: {b}")
    for line in rep.lines(args.dry_run):
        say(f"migrate: {line}")
    if args.dry_run:
        say("migrate: dry run, nothing changed")
    elif rep.dropped:
        say(
            f"migrate: verified all {rep.legacy_rows} rows in {hdf5}; dropped the legacy "
            f"table from {products}"
        )
    else:
        say(
            f"migrate: verified all {rep.legacy_rows} rows in {hdf5}; legacy table kept "
            "(--keep-legacy)"
        )
    return EXIT_OK


@contextlib.contextmanager
def migrate_lock(products_path: Path, hdf5_path: Path | None = None) -> Iterator[None]:
    """One ``migrate`` at a time per legacy products DB: an exclusive ``flock`` on
    ``<products>.migrate.lock``, taken before the backups (the kernel drops it when the
    run dies, even by SIGKILL). A second run is refused at once, naming the first: it
    would only wait on the first's write lock and fail.

    With ``hdf5_path``, also the daemon's own lock on that HDF5 DB (``run`` holds it for
    its life): a migrate beside a running daemon would hold the DB's write lock for the
    whole copy, and the daemon would report itself unhealthy meanwhile."""
    from dsa110_ingest.statedir import StateLock

    lock = StateLock(products_path.with_name(products_path.name + ".migrate"))
    _take(
        lock,
        "another migrate",
        f"is running on {products_path} (it holds {lock.path}); wait for it to finish, then "
        "run `migrate` again if you want to check: it says `nothing to migrate` once that "
        "run has completed",
    )
    daemon = StateLock(hdf5_path) if hdf5_path is not None else None
    try:
        if daemon is not None:
            _take(
                daemon,
                "a dsa110-ingest daemon",
                f"is running on {hdf5_path} (it holds {daemon.path}); stop it first (`sudo "
                "systemctl stop dsa110-ingest`), run `migrate`, then start it again: the "
                "migration writes that database for its whole copy",
            )
        yield
    finally:
        if daemon is not None:
            daemon.release()
        lock.release()


def _take(lock: StateLock, who: str, why: str) -> None:
    """Take ``lock`` or refuse, naming its holder (by pid when it wrote one)."""
    from dsa110_ingest.statedir import AlreadyRunningError

    try:
        lock.acquire("migrate")
    except AlreadyRunningError:
        pid = lock.holder()
        raise MigrationError(
            f"{who}{f' (pid {pid})' if pid else ''} {why}. This run changed nothing"
        ) from None


def _run_copy(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.migrate_to import run_copy

    if args.keep_legacy or args.no_queue or args.stop_after:
        raise MigrationError("--keep-legacy, --no-queue and --stop-after do not go with --to")
    if not args.products_to:
        raise MigrationError(
            "--to needs --products-to URI too: the products (ms_index) go to a database of "
            "their own, e.g. --to postgresql://dsa110@db/dsa110_index --products-to "
            "postgresql://dsa110@db/dsa110_products"
        )
    products = abs_path(args.products_db) if args.products_db else _sqlite_source(cfg, "products")
    hdf5 = abs_path(args.hdf5_db) if args.hdf5_db else _sqlite_source(cfg, "hdf5")
    rep = run_copy(
        hdf5,
        products,
        args.to,
        args.products_to,
        node=args.node or cfg.node,
        dry_run=args.dry_run,
        batch_rows=args.batch_rows,
        stop_after_rows=args.stop_after_rows,
    )
    for line in rep.lines(args.dry_run):
        say(f"migrate --to: {line}")
    if args.dry_run:
        if rep.conflicts:
            say(
                f"migrate --to: {rep.conflicts} destination row(s) differ from the source: "
                "a real run would stop on them (copy into an empty database)"
            )
        say("migrate --to: dry run, nothing changed")
    return EXIT_OK


def _sqlite_source(cfg: Config, which: str) -> Path:
    """The configured SQLite file ``--to`` copies from; a configured URI is no source
    (and never a path: ``Path`` would mangle it)."""
    value = getattr(cfg, f"{which}_db")
    if isinstance(value, Path):
        return value
    raise MigrationError(
        f"{which}_db is a PostgreSQL database ({redact_db(value)}), and `migrate` reads "
        "SQLite files (a legacy products DB; with --to, the files to copy into PostgreSQL): "
        "name them with --hdf5-db FILE --products-db FILE"
    )
