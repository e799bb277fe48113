"""``dsa110-ingest migrate --to URI``: copy a SQLite index and products DB into another
backend (PostgreSQL), verified, idempotent, resumable.

Both sides are stores opened by the factory; the copy goes through the store interface
(``export_rows`` / ``rows_by_key`` / ``import_rows``), table by table in foreign-key
order (``records.INDEX_COPY_TABLES``), in batches of one transaction each:

- every row keeps its key: file paths, group ids, event ids, location ids, so a consumer
  resuming with ``events --after N`` misses nothing and nothing is re-grouped;
- a row whose key the destination already has is left alone, so a rerun copies nothing
  and a killed run resumes where its last committed batch ended;
- the copy is then verified row by row (every source row is in the destination and
  equal), and a destination row that differs from the source's is an error naming it;
- locations without a node get this node (``--node``, default the configured ``node``),
  so the daemon that starts on the new index owns its locations at once.

``--dry-run`` reads both sides, reports what would be copied and what conflicts, and
writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa110_ingest.db import (
    IndexStore,
    ProductsStore,
    _redact,
    backend_of,
    open_index_at,
    open_products_at,
)
from dsa110_ingest.db.records import INDEX_COPY_TABLES, INDEX_ID_KEY, PRODUCTS_COPY_TABLES, Location
from dsa110_ingest.db.store import Store
from dsa110_ingest.errors import DatabaseError, MigrationError, SchemaMissingError
from dsa110_ingest.statedir import EventIdFloor, StateLock

BATCH_ROWS = 2000
# a conflicting row is named in the report; past this many, only counted
NAMED_CONFLICTS = 10


@dataclass
class TableCopy:
    """What happened (or would happen, in a dry run) to one table."""

    table: str
    source_rows: int = 0
    copied: int = 0
    already_there: int = 0
    conflicts: list[str] = field(default_factory=list)
    n_conflicts: int = 0
    verified: int = 0

    def line(self, dry_run: bool) -> str:
        verb = "would copy" if dry_run else "copied"
        s = (
            f"{self.table}: {self.source_rows} row(s); {verb} {self.copied}, "
            f"{self.already_there} already there and equal"
        )
        if self.n_conflicts:
            s += (
                f", {self.n_conflicts} already there but DIFFERENT (e.g. "
                + ", ".join(self.conflicts[:3])
                + ")"
            )
        return s


@dataclass
class CopyReport:
    source: str
    destination: str
    node: str
    tables: list[TableCopy] = field(default_factory=list)
    event_id_high: int = 0
    floor_raised: bool = False
    verified: bool = False
    index_id: str | None = None  # the source's identity, carried over

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def conflicts(self) -> int:
        return sum(t.n_conflicts for t in self.tables)

    def lines(self, dry_run: bool) -> list[str]:
        out = [f"from {self.source}", f"to   {self.destination}"]
        out += [t.line(dry_run) for t in self.tables]
        out.append(
            f"locations without a node are given node {self.node!r}; event ids, group ids "
            f"and paths are kept; the next event id will be > {self.event_id_high}"
        )
        if self.index_id:
            out.append(
                f"index identity {self.index_id} {'is' if dry_run else 'was'} carried over: "
                "the output_dir's ownership claim stays this index's (docs/operations.md)"
            )
        if self.verified:
            n = sum(t.verified for t in self.tables)
            out.append(
                f"verified: all {n} source rows are in the destination and equal "
                f"({len(self.tables)} tables: counts and every row by key)"
            )
        return out


def _key(rec: Any, key: str) -> Any:
    return getattr(rec, key)


def _as_copied(table: str, rec: Any, node: str) -> Any:
    """The source row as the destination should hold it."""
    if table == "storage_locations" and isinstance(rec, Location) and not rec.node:
        return dataclasses.replace(rec, node=node)
    return rec


def _describe_difference(src: Any, dst: Any) -> str:
    diff = [
        f.name
        for f in dataclasses.fields(src)
        if getattr(src, f.name) != getattr(dst, f.name, None)
    ]
    return "differs in " + ", ".join(diff[:5])


def _batches(store: Store, table: str, key: str, size: int) -> Iterator[list[Any]]:
    after: Any = None
    while batch := store.export_rows(table, after, size):
        # the identity is not a row to copy: the destination takes it over (copy_stores)
        yield [r for r in batch if not (table == "meta" and r.key == INDEX_ID_KEY)]
        after = _key(batch[-1], key)


def _copy_table(
    src: Store,
    dst: Store,
    table: str,
    key: str,
    *,
    node: str,
    dry_run: bool,
    batch_rows: int,
    on_batch: Callable[[int], None],
) -> TableCopy:
    tc = TableCopy(table)
    for batch in _batches(src, table, key, batch_rows):
        rows = [_as_copied(table, r, node) for r in batch]
        have = dst.rows_by_key(table, [_key(r, key) for r in rows])
        new = []
        for r in rows:
            k = _key(r, key)
            there = have.get(k)
            if there is None:
                new.append(r)
            elif there == r:
                tc.already_there += 1
            else:
                tc.n_conflicts += 1
                if len(tc.conflicts) < NAMED_CONFLICTS:
                    tc.conflicts.append(f"{key} {k!r} {_describe_difference(r, there)}")
        tc.source_rows += len(rows)
        if new and not dry_run:
            with dst.transaction(f"copying {len(new)} {table} row(s)"):
                tc.copied += dst.import_rows(table, new)
            on_batch(tc.copied)
        else:
            tc.copied += len(new)
    return tc


def _verify_table(src: Store, dst: Store, tc: TableCopy, key: str, node: str, size: int) -> None:
    seen = 0
    for batch in _batches(src, tc.table, key, size):
        rows = [_as_copied(tc.table, r, node) for r in batch]
        have = dst.rows_by_key(tc.table, [_key(r, key) for r in rows])
        for r in rows:
            k = _key(r, key)
            there = have.get(k)
            if there is None:
                raise MigrationError(
                    f"verification failed: {tc.table} row {key} {k!r} is not in the "
                    "destination after the copy; rerun `migrate --to` (it copies what is "
                    "missing) and report this if it persists"
                )
            if there != r:
                raise MigrationError(
                    f"verification failed: {tc.table} row {key} {k!r} "
                    f"{_describe_difference(r, there)} between source and destination"
                )
            seen += 1
    if seen != tc.source_rows:
        raise MigrationError(
            f"verification failed: {tc.table} has {seen} row(s) in the source now but "
            f"{tc.source_rows} were copied; was a daemon writing to the source? Stop it and "
            "rerun `migrate --to`"
        )
    tc.verified = seen


def copy_stores(
    src_index: IndexStore,
    src_products: ProductsStore,
    dst_index: IndexStore,
    dst_products: ProductsStore,
    *,
    node: str,
    dry_run: bool = False,
    event_floor: int = 0,
    batch_rows: int = BATCH_ROWS,
    on_batch: Callable[[int], None] = lambda n: None,
) -> CopyReport:
    """Copy (or, dry, compare) every copyable table; raises MigrationError when a
    destination row conflicts with its source row or the copy does not verify."""
    rep = CopyReport(
        source=f"{src_index.name} + {src_products.name}",
        destination=f"{dst_index.name} + {dst_products.name}",
        node=node,
    )
    pairs: list[tuple[Store, Store, dict[str, tuple[type, str]]]] = [
        (src_index, dst_index, INDEX_COPY_TABLES),
        (src_products, dst_products, PRODUCTS_COPY_TABLES),
    ]
    for src, dst, tables in pairs:
        for table, (_cls, key) in tables.items():
            rep.tables.append(
                _copy_table(
                    src,
                    dst,
                    table,
                    key,
                    node=node,
                    dry_run=dry_run,
                    batch_rows=batch_rows,
                    on_batch=on_batch,
                )
            )
    rep.event_id_high = max(src_index.event_id_high(), event_floor)
    rep.index_id = src_index.index_id()
    if dry_run:
        return rep
    if rep.conflicts:
        named = "; ".join(
            f"{t.table}: {', '.join(t.conflicts[:3])}" for t in rep.tables if t.conflicts
        )
        raise MigrationError(
            f"the destination already holds {rep.conflicts} row(s) that differ from the "
            f"source's ({named}); they were left alone, every other row is copied. "
            "migrate --to copies one index into an empty database (or into its own earlier, "
            "interrupted copy): drop the destination's tables or use a new database"
        )
    # ids are never reused: the next event id lies above every id the source handed out
    rep.floor_raised = dst_index.raise_event_id_floor(rep.event_id_high)
    # the same index, moved: the claim on the output_dir names it, so the id moves too
    if rep.index_id and dst_index.index_id() != rep.index_id:
        dst_index.adopt_index_id(rep.index_id)
    by_table = {t.table: t for t in rep.tables}
    for src, dst, tables in pairs:
        for table, (_cls, key) in tables.items():
            _verify_table(src, dst, by_table[table], key, node, batch_rows)
    if rep.index_id and dst_index.index_id() != rep.index_id:
        raise MigrationError(
            f"verification failed: the destination's index identity is "
            f"{dst_index.index_id()}, not the source's {rep.index_id}; rerun `migrate --to`"
        )
    rep.verified = True
    return rep


@contextmanager
def _readable(path: Path, opener: Callable[..., Any]) -> Iterator[Any]:
    """A SQLite source opened without changing it. A file written by an older version
    (its schema not yet migrated) is read from a migrated throw-away copy."""
    tables = INDEX_COPY_TABLES if opener is open_index_at else PRODUCTS_COPY_TABLES
    try:
        with opener(path, readonly=True) as s:
            for table in tables:
                s.export_rows(table, None, 1)
        current = True
    except DatabaseError:
        current = False
    if current:
        with opener(path, readonly=True) as s:
            yield s
        return
    with tempfile.TemporaryDirectory() as d:
        scratch = Path(d) / path.name
        with opener(path, readonly=True) as s:
            s.backup_to(scratch)
        with opener(scratch) as copy:
            yield copy


class _NoTables:
    """A destination database without tables yet, as a dry run sees it: no rows."""

    def __init__(self, name: str) -> None:
        self.name = name

    def rows_by_key(self, table: str, keys: Any) -> dict[Any, Any]:
        return {}

    def close(self) -> None:
        pass


@contextmanager
def _destination(target: str, opener: Callable[..., Any]) -> Iterator[Any]:
    """The destination, read-only (a dry run creates nothing, not even the tables)."""
    try:
        store = opener(target, readonly=True)
    except SchemaMissingError:
        yield _NoTables(f"{_redact(target)} (no tables yet: all would be created)")
        return
    with store:
        yield store


def _kill_after(n: int | None) -> Callable[[int], None]:
    """Fault injection for the tests: a real SIGKILL once ``n`` rows of a table are in."""

    def check(copied: int) -> None:
        if n is not None and copied >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    return check


def run_copy(
    source_index: Path,
    source_products: Path,
    to_index: str,
    to_products: str,
    *,
    node: str,
    dry_run: bool = False,
    batch_rows: int = BATCH_ROWS,
    stop_after_rows: int | None = None,
) -> CopyReport:
    for p, what in ((source_index, "index"), (source_products, "products DB")):
        if backend_of(p) != "sqlite":
            raise MigrationError(f"the source {what} {p} must be a SQLite file")
        if not p.exists():
            raise MigrationError(
                f"the source {what} {p} does not exist; pass --hdf5-db/--products-db or "
                "--config naming the deployment to copy"
            )
    for target, what in ((to_index, "--to"), (to_products, "--products-to")):
        if backend_of(target) == "sqlite":
            raise MigrationError(
                f"{what} {target!r} is not a PostgreSQL URI; give one such as "
                "postgresql://dsa110@db-host/dsa110 (docs/scale-out.md)"
            )
    with ExitStack() as stack:
        if not dry_run:
            # the source must not change under the copy: no daemon may run on it
            lock = StateLock(source_index)
            lock.acquire("migrate --to")
            stack.callback(lock.release)
        # read-only either way: the SQLite files are never changed
        src_i = stack.enter_context(_readable(source_index, open_index_at))
        src_p = stack.enter_context(_readable(source_products, open_products_at))
        if src_p.has_table("hdf5_file_index"):
            raise MigrationError(
                f"{source_products} still holds upstream's hdf5_file_index; run "
                "`dsa110-ingest migrate` (without --to) first, then copy"
            )
        if dry_run:
            dst_i = stack.enter_context(_destination(to_index, open_index_at))
            dst_p = stack.enter_context(_destination(to_products, open_products_at))
        else:
            dst_i = stack.enter_context(open_index_at(to_index))
            dst_p = stack.enter_context(open_products_at(to_products))
        return copy_stores(
            src_i,
            src_p,
            dst_i,
            dst_p,
            node=node,
            dry_run=dry_run,
            event_floor=EventIdFloor(source_index).value,
            batch_rows=batch_rows,
            on_batch=_kill_after(stop_after_rows),
        )
    raise AssertionError("unreachable")  # pragma: no cover
