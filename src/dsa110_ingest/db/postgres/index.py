"""The index store on PostgreSQL: one index shared by several ingest nodes.

Every statement is parameterized; a logical write is one ``transaction()``. What makes
several nodes safe (docs/database.md, "PostgreSQL: several nodes"):

- clustering of a time window is serialised by :meth:`lock_time_window`:
  transaction-scoped advisory locks on the window's time buckets, widened to the spans of
  the groups the window reaches, so two nodes placing files of one observation at the same
  moment never both create its group;
- event ids are handed out under a transaction lock, so they become visible in id order
  and a consumer that remembers the last id it read never skips one committed late;
- ``NOTIFY`` is sent in the event's own transaction (delivered on commit) and
  :meth:`wait_for_events` ``LISTEN``\\ s on a second connection;
- conversion jobs are claimed with ``FOR UPDATE SKIP LOCKED``;
- one daemon per node name: a session advisory lock on this store's connection.
"""

from __future__ import annotations

import json
import math
import select
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.postgres import copy
from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.connection import connect, psycopg_module, translate
from dsa110_ingest.db.postgres.maintenance import dump_database, integrity_report
from dsa110_ingest.db.postgres.schema import (
    INDEX_MIGRATIONS,
    INDEX_TABLES,
    LOCK_EVENTS,
    LOCK_NODE,
)
from dsa110_ingest.db.records import (
    FILE_COLUMNS,
    GROUP_COLUMNS,
    INDEX_COPY_TABLES,
    JOB_COLUMNS,
    ConversionJob,
    Event,
    FileRecord,
    Group,
    GroupSpan,
    GroupSummary,
    Heartbeat,
    IndexCounts,
    KnownFile,
    Location,
    MemberFile,
    RejectedFile,
    field_names,
)
from dsa110_ingest.db.store import IndexStore
from dsa110_ingest.errors import DatabaseBusyError, DatabaseError
from dsa110_ingest.naming import path_bytes, path_text

EVENTS_CHANNEL = "dsa110_events"
# window locks use the one-bigint advisory key (a lock space apart from the two-int keys
# of schema.py): a namespace in the high 16 bits, the bucket number below
_WINDOW_NS = 0x4453 << 48
_BUCKET_MASK = (1 << 48) - 1
# a window that keeps widening through ever longer groups is a damaged index: stop there
_MAX_WIDEN = 32

_FILE_COLS = ", ".join(FILE_COLUMNS)
_GROUP_COLS = ", ".join(GROUP_COLUMNS)
_JOB_COLS = ", ".join(JOB_COLUMNS)
_LOCATION_COLS = ", ".join(field_names(Location))
_REJECTED_COLS = ", ".join(field_names(RejectedFile))
_HEARTBEAT_COLS = "node, pid, hostname, started_at, updated_at, status"
_FILE_VALUES = ", ".join(f"%({c})s" for c in FILE_COLUMNS)
_UPSERT_FILE = (
    f"INSERT INTO hdf5_file_index ({_FILE_COLS}) VALUES ({_FILE_VALUES}) "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in FILE_COLUMNS if c != "path")
)
_INSERT_FILE_IF_NEW = (
    f"INSERT INTO hdf5_file_index ({_FILE_COLS}) VALUES ({_FILE_VALUES}) "
    "ON CONFLICT (path) DO NOTHING"
)
_CLAIMABLE = (
    "((state = 'pending' AND next_attempt_at <= %(now)s) "
    "OR (state = 'running' AND lease_expires_at < %(now)s))"
)


def _heartbeat(row: Sequence[Any]) -> Heartbeat:
    return Heartbeat(*row[:5], status=json.loads(row[5] or "{}"))


def window_buckets(lo: float, hi: float, width: float) -> list[int]:
    """Advisory-lock keys of the time buckets of ``width`` seconds covering [lo, hi]."""
    first, last = math.floor(lo / width), math.floor(hi / width)
    return [_WINDOW_NS | (b & _BUCKET_MASK) for b in range(first, last + 1)]


class _IndexConnection(PgConnection):
    def __init__(self, uri: str, *, readonly: bool) -> None:
        self.nodes_locked: set[str] = set()
        super().__init__(uri, "index", INDEX_MIGRATIONS, readonly=readonly)

    def lock_node(self, node: str) -> bool:
        return bool(self.value("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_NODE, node)))

    def reconnected(self) -> None:
        # a node's lock lived in the lost session: take it again or stop claiming the node
        for node in sorted(self.nodes_locked):
            if not self.lock_node(node):
                self.nodes_locked.discard(node)
                raise DatabaseError(
                    f"lost the connection to {self.name} and with it the lock of node "
                    f"{node!r}, which another daemon took meanwhile; two daemons are "
                    "configured with that node name: give each its own"
                )


class PostgresIndexStore(IndexStore):
    """The index in a PostgreSQL database. Not thread-safe: one owner thread per instance."""

    def __init__(self, uri: str, *, readonly: bool = False) -> None:
        self.c = _IndexConnection(uri, readonly=readonly)
        self.uri = uri
        self.name = self.c.name
        self.readonly = readonly
        self._pg = psycopg_module()
        self._listener: Any = None
        self._span_cache: float | None = None
        # (ts, tolerance, groups) read by lock_time_window for the groups_near that follows
        self._near: tuple[float, float, list[GroupSpan]] | None = None
        # (group id, its files) read inside the current transaction, until a file is written
        self._files: tuple[str, list[FileRecord]] | None = None

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.c.nodes_locked.clear()  # session locks end with the session
        self.c.close()

    def __enter__(self) -> PostgresIndexStore:
        return self

    def dbapi_connection(self) -> Any:
        return self.c.live()

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        self._near, self._files = None, None
        try:
            with self.c.transaction(doing):
                yield
        finally:
            self._near, self._files = None, None

    # -- storage locations ----------------------------------------------------------------
    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        with self.transaction(f"registering storage location {name}"):
            found = self.c.value(
                "SELECT id FROM storage_locations WHERE node = %s AND (name = %s OR path = %s) "
                "ORDER BY (name = %s) DESC LIMIT 1 FOR UPDATE",
                (node, name, path, name),
            )
            if found is not None:
                self.c.x(
                    "UPDATE storage_locations SET name = %s, path = %s, role = %s, "
                    "description = %s WHERE id = %s",
                    (name, path, role, description, found),
                )
                return int(found)
            return int(
                self.c.value(
                    "INSERT INTO storage_locations (name, path, role, description, node) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (name, path, role, description, node),
                )
            )

    def locations(self, node: str | None = None) -> list[Location]:
        if node is None:
            rows = self.c.all(f"SELECT {_LOCATION_COLS} FROM storage_locations ORDER BY id")
        else:
            rows = self.c.all(
                f"SELECT {_LOCATION_COLS} FROM storage_locations WHERE node = %s ORDER BY id",
                (node,),
            )
        return [Location(*r) for r in rows]

    # -- the file index -------------------------------------------------------------------
    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        rows = self.c.all(
            "SELECT path, file_size_bytes, mtime_ns, stored FROM hdf5_file_index "
            "WHERE storage_location_id = %s",
            (location_id,),
        )
        return {r[0]: KnownFile(r[1], r[2], r[3]) for r in rows}

    def known_rejected(self) -> dict[str, KnownFile]:
        rows = self.c.all("SELECT path, file_size_bytes, mtime_ns FROM rejected_files")
        return {r[0]: KnownFile(r[1], r[2], 0) for r in rows}

    def get_file(self, path: str) -> FileRecord | None:
        row = self.c.first(
            f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE path = %s", (path_text(path),)
        )
        return None if row is None else FileRecord(*row)

    def files_named(self, filename: str) -> list[FileRecord]:
        rows = self.c.all(
            f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE filename = %s", (filename,)
        )
        return [FileRecord(*r) for r in rows]

    def upsert_file(self, row: Mapping[str, Any]) -> None:
        self._files = None  # file rows change
        self.c.x(_UPSERT_FILE, {c: row.get(c) for c in FILE_COLUMNS})

    def upsert_files(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._files = None  # file rows change
        """*Inside a transaction.* Many :meth:`upsert_file` in one round trip (psycopg's
        ``executemany`` runs in pipeline mode)."""
        params = [{c: r.get(c) for c in FILE_COLUMNS} for r in rows]
        if not params:
            return
        self.c.executemany(_UPSERT_FILE, params, f"writing {len(params)} file rows")

    # -- copying the whole index (``migrate --to``) -----------------------------------------
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.c, INDEX_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.c, INDEX_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        self._files = None  # file rows change
        return copy.import_rows(self.c, INDEX_COPY_TABLES, table, rows)

    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        self._files = None  # file rows change
        return self.c.count(_INSERT_FILE_IF_NEW, {c: row.get(c) for c in FILE_COLUMNS}) == 1

    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        self._files = None  # file rows change
        self.c.x("DELETE FROM rejected_files WHERE path = %s", (new,))
        self.c.x(
            "UPDATE hdf5_file_index SET path = %s, storage_location_id = %s, stored = 1, "
            "file_size_bytes = %s, modified_time = %s, mtime_ns = %s WHERE path = %s",
            (new, location_id, size, mtime, mtime_ns, old),
        )

    def mark_missing(self, paths: Iterable[str]) -> int:
        self._files = None  # file rows change
        texts = [path_text(p) for p in paths]
        if not texts:
            return 0
        return self.c.count(
            "UPDATE hdf5_file_index SET stored = 0 WHERE path = ANY(%s) AND stored = 1",
            (texts,),
        )

    def subband_taken(self, group_id: str, subband: int) -> bool:
        return (
            self.c.first(
                "SELECT 1 FROM hdf5_file_index WHERE group_id = %s AND subband_num = %s "
                "AND is_duplicate = 0 LIMIT 1",
                (group_id, subband),
            )
            is not None
        )

    def set_duplicate(self, path: str, dup: int) -> None:
        self._files = None  # file rows change
        self.c.x("UPDATE hdf5_file_index SET is_duplicate = %s WHERE path = %s", (dup, path))

    def all_paths(self) -> set[str]:
        return {r[0] for r in self.c.all("SELECT path FROM hdf5_file_index")}

    def stored_paths(self) -> list[str]:
        return [r[0] for r in self.c.all("SELECT path FROM hdf5_file_index WHERE stored = 1")]

    def path_groups(self) -> dict[str, str | None]:
        return dict(self.c.all("SELECT path, group_id FROM hdf5_file_index"))  # type: ignore[arg-type]

    # -- rejected files -------------------------------------------------------------------
    def reject(
        self,
        path: str,
        reason: str,
        detail: str,
        size: int | None,
        mtime_ns: int | None,
        location_id: int | None,
        now: float,
    ) -> None:
        self.c.x(
            "INSERT INTO rejected_files (path, reason, detail, file_size_bytes, mtime_ns, "
            "first_seen_at, last_seen_at, attempts, storage_location_id, path_bytes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, %s) ON CONFLICT (path) DO UPDATE SET "
            "reason = EXCLUDED.reason, detail = EXCLUDED.detail, "
            "file_size_bytes = EXCLUDED.file_size_bytes, mtime_ns = EXCLUDED.mtime_ns, "
            "last_seen_at = EXCLUDED.last_seen_at, attempts = rejected_files.attempts + 1",
            (
                path_text(path),
                reason,
                detail,
                size,
                mtime_ns,
                now,
                now,
                location_id,
                path_bytes(path),
            ),
        )

    def unreject(self, path: str) -> None:
        self.c.x("DELETE FROM rejected_files WHERE path = %s", (path_text(path),))

    def rejected(self) -> list[RejectedFile]:
        rows = self.c.all(f"SELECT {_REJECTED_COLS} FROM rejected_files ORDER BY last_seen_at DESC")
        return [RejectedFile(*r) for r in rows]

    # -- groups ---------------------------------------------------------------------------
    def lock_time_window(self, ts: float, tolerance: float) -> None:
        """Serialise the clustering of [ts - tolerance, ts + tolerance] across nodes.

        Time is cut into buckets one tolerance wide; a writer locks (transaction-scoped
        advisory locks, released at COMMIT/ROLLBACK) every bucket its window touches,
        so two writers whose files could join one group (windows overlapping) always
        share a bucket and run one after the other. The window is then widened to the
        spans of the groups it reaches, and their buckets locked too: a long group is
        changed by files at both of its ends, which must also meet on a lock. Locks are
        taken in ascending order within a round; a wait cycle across rounds is broken
        by PostgreSQL's deadlock detector and reported as busy (the batch is retried)."""
        width = max(float(tolerance), 1.0)
        lo, hi = ts - tolerance, ts + tolerance
        held: set[int] = set()
        for _ in range(_MAX_WIDEN):
            need = sorted(set(window_buckets(lo, hi, width)) - held)
            if not need:
                return
            self.c.x(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k",
                (need,),
            )
            held.update(need)
            reached = [
                GroupSpan(*r)
                for r in self.c.all(
                    "SELECT group_id, min_ts, max_ts, state FROM groups "
                    "WHERE max_ts >= %s AND min_ts <= %s",
                    (lo, hi),
                )
            ]
            # read after every lock it needs was taken: groups_near, asked next for this
            # window, is answered from it (one round trip less per file)
            self._near = (ts, tolerance, reached)
            if not reached:
                return
            lo = min(lo, *(g.min_ts for g in reached))
            hi = max(hi, *(g.max_ts for g in reached))
        raise DatabaseError(
            f"database {self.name}: the groups around {ts} chain over more than "
            f"{_MAX_WIDEN} clustering windows; the groups table is damaged "
            "(`dsa110-ingest groups` lists them)"
        )

    def groups_near(self, ts: float, tolerance: float) -> list[GroupSpan]:
        near, self._near = self._near, None
        if near is not None and near[:2] == (ts, tolerance) and self.c.in_transaction:
            lo, hi = ts - tolerance, ts + tolerance
            return [g for g in near[2] if g.max_ts >= lo and g.min_ts <= hi]
        rows = self.c.all(
            "SELECT group_id, min_ts, max_ts, state FROM groups "
            "WHERE max_ts >= %s AND min_ts <= %s",
            (ts - tolerance, ts + tolerance),
        )
        return [GroupSpan(*r) for r in rows]

    def create_group(
        self, group_id: str, ts: float, expected: int, now: float, deadline: float
    ) -> None:
        self.c.x(
            f"INSERT INTO groups ({_GROUP_COLS}) VALUES (%s, 'collecting', 0, %s, 0, %s, %s, "
            "NULL, NULL, %s, %s, NULL, NULL, %s)",
            (group_id, expected, ts, ts, now, now, deadline),
        )

    def absorb_group(self, target: str, other: str) -> None:
        self._files = None  # file rows change
        args = {"t": target, "o": other}
        self.c.x(
            "UPDATE groups SET first_seen_at = LEAST(groups.first_seen_at, o.first_seen_at), "
            "deadline_at = LEAST(groups.deadline_at, o.deadline_at) FROM groups o "
            "WHERE groups.group_id = %(t)s AND o.group_id = %(o)s",
            args,
        )
        # members of the absorbed group whose subband the target already has: conflicts
        self.c.x(
            "UPDATE hdf5_file_index f SET is_duplicate = 1 WHERE f.group_id = %(o)s AND EXISTS ("
            "SELECT 1 FROM hdf5_file_index t WHERE t.group_id = %(t)s AND t.is_duplicate = 0 "
            "AND t.subband_num = f.subband_num)",
            args,
        )
        self.c.x("UPDATE hdf5_file_index SET group_id = %(t)s WHERE group_id = %(o)s", args)
        self.c.x("DELETE FROM groups WHERE group_id = %(o)s", args)

    def rename_group(self, old: str, new: str) -> None:
        self._files = None  # file rows change
        # the job follows through the foreign key's ON UPDATE CASCADE
        self.c.x("UPDATE groups SET group_id = %s WHERE group_id = %s", (new, old))
        self.c.x("UPDATE hdf5_file_index SET group_id = %s WHERE group_id = %s", (new, old))

    def refresh_group(self, group_id: str, min_ts: float, max_ts: float, now: float) -> Group:
        # the row lock first, in a statement of its own: the recount below then runs on a
        # snapshot taken after any other writer of this group committed (a subquery of the
        # UPDATE itself would keep the snapshot from before the wait and miss its file),
        # so of two nodes adding the last two subbands, the second sees all of them
        self.c.x("SELECT 1 FROM groups WHERE group_id = %s FOR UPDATE", (group_id,))
        row = self.c.first(
            "UPDATE groups SET min_ts = LEAST(min_ts, %s), max_ts = GREATEST(max_ts, %s), "
            "last_seen_at = %s, (n_subbands, n_conflicts, start_mjd, end_mjd) = ("
            "SELECT COUNT(DISTINCT CASE WHEN is_duplicate = 0 THEN subband_num END), "
            "COALESCE(SUM(is_duplicate), 0), MIN(start_mjd), MAX(end_mjd) "
            "FROM hdf5_file_index WHERE group_id = %s) WHERE group_id = %s "
            f"RETURNING {_GROUP_COLS}",
            (min_ts, max_ts, now, group_id, group_id),
        )
        if row is None:
            # another node renamed or merged it after this transaction read its id: busy,
            # so the whole batch is rolled back and retried with the id as it is now
            raise DatabaseBusyError(
                f"database {self.name}: group {group_id} was renamed by another writer "
                "while it was refreshed; the indexing batch is rolled back and retried"
            )
        group = Group(*row)
        if group.end_mjd is not None and group.start_mjd is not None:
            span = group.end_mjd - group.start_mjd
            if span > self._max_span():
                self.c.x(
                    "INSERT INTO meta VALUES ('max_group_span_mjd', %s) ON CONFLICT (key) DO "
                    "UPDATE SET value = GREATEST(CAST(meta.value AS DOUBLE PRECISION), "
                    "CAST(EXCLUDED.value AS DOUBLE PRECISION))::text",
                    (repr(span),),
                )
                self._span_cache = None  # read again: the transaction may yet roll back
        return group

    def _max_span(self) -> float:
        if self._span_cache is None:
            v = self.c.value("SELECT value FROM meta WHERE key = 'max_group_span_mjd'")
            self._span_cache = float(v) if v is not None else 0.0
        return self._span_cache

    def set_group_state(self, group_id: str, state: str, now: float) -> None:
        col = {"complete": "completed_at", "incomplete": "incomplete_at"}.get(state)
        if col:
            self.c.x(
                f"UPDATE groups SET state = %s, {col} = COALESCE({col}, %s) WHERE group_id = %s",
                (state, now, group_id),
            )
        else:
            self.c.x("UPDATE groups SET state = %s WHERE group_id = %s", (state, group_id))

    def group(self, group_id: str) -> Group | None:
        row = self.c.first(f"SELECT {_GROUP_COLS} FROM groups WHERE group_id = %s", (group_id,))
        return None if row is None else Group(*row)

    def open_groups(self, obs_before_ts: float | None = None) -> list[Group]:
        q = f"SELECT {_GROUP_COLS} FROM groups WHERE state = 'collecting'"
        args: tuple[float, ...] = ()
        if obs_before_ts is not None:
            q += " AND max_ts <= %s"
            args = (obs_before_ts,)
        q += " ORDER BY min_ts"
        if self.c.in_transaction and not self.readonly:
            # a writer acts on what it reads (expiry: collecting -> incomplete): lock the
            # rows, so that of two nodes expiring one group the second, once the first
            # committed, no longer sees it open, and a group completed meanwhile is
            # left alone (READ COMMITTED re-checks the state after the wait)
            q += " FOR UPDATE"
        return [Group(*r) for r in self.c.all(q, args)]

    def partial_candidates(
        self, older_than: float, min_subbands: int, obs_before_ts: float | None = None
    ) -> list[Group]:
        rows = self.c.all(
            f"SELECT {_GROUP_COLS} FROM groups g WHERE state = 'incomplete' "
            "AND (first_seen_at <= %s OR max_ts <= %s) AND n_subbands >= %s AND NOT EXISTS "
            "(SELECT 1 FROM conversion_jobs j WHERE j.group_id = g.group_id) ORDER BY min_ts",
            (
                older_than,
                obs_before_ts if obs_before_ts is not None else float("-inf"),
                min_subbands,
            ),
        )
        return [Group(*r) for r in rows]

    def group_files(self, group_id: str, *, members_only: bool = True) -> list[FileRecord]:
        cached = self._files
        if cached is not None and cached[0] == group_id and self.c.in_transaction:
            files = cached[1]
        else:
            # all files, the members filtered out here: indexing one file asks for the
            # members and then for all, with no file written between (one round trip)
            files = [
                FileRecord(*r)
                for r in self.c.all(
                    f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE group_id = %s "
                    "ORDER BY subband_num NULLS FIRST, is_duplicate, path",
                    (group_id,),
                )
            ]
            self._files = (group_id, files) if self.c.in_transaction else None
        return [f for f in files if not f.is_duplicate] if members_only else list(files)

    def groups_overlapping(
        self, start_mjd: float, end_mjd: float, state: str | None = None
    ) -> list[Group]:
        # start_mjd is indexed; bounding it below by the longest group (read in the same
        # statement, fresh: another node may have widened it) keeps a range scan
        q = (
            f"SELECT {_GROUP_COLS} FROM groups WHERE start_mjd >= %s - COALESCE((SELECT "
            "CAST(value AS DOUBLE PRECISION) FROM meta WHERE key = 'max_group_span_mjd'), 0) "
            "AND start_mjd <= %s AND end_mjd >= %s"
        )
        args: list[Any] = [start_mjd - 1e-9, end_mjd, start_mjd]
        if state:
            q += " AND state = %s"
            args.append(state)
        return [Group(*r) for r in self.c.all(q + " ORDER BY start_mjd", args)]

    def list_groups(
        self,
        since_ts: float | None,
        until_ts: float | None,
        state: str | None,
        limit: int | None = None,
    ) -> list[GroupSummary]:
        q = (
            f"SELECT {', '.join('g.' + c for c in GROUP_COLUMNS)}, j.state AS convert_state, "
            "j.attempts, j.last_error, j.ms_path, j.next_attempt_at "
            "FROM groups g LEFT JOIN conversion_jobs j USING (group_id) WHERE TRUE"
        )
        args: list[Any] = []
        if since_ts is not None:
            q += " AND g.max_ts >= %s"
            args.append(since_ts)
        if until_ts is not None:
            q += " AND g.min_ts <= %s"
            args.append(until_ts)
        if state:
            q += " AND (g.state = %s OR j.state = %s)"
            args += [state, state]
        q += " ORDER BY g.min_ts"
        if limit:
            q += " LIMIT %s"
            args.append(int(limit))
        return [GroupSummary(*r) for r in self.c.all(q, args)]

    def files_of_groups(self, group_ids: Sequence[str]) -> dict[str, list[MemberFile]]:
        out: dict[str, list[MemberFile]] = {g: [] for g in group_ids}
        if not group_ids:
            return out
        rows = self.c.all(
            "SELECT group_id, path, subband_num, stored FROM hdf5_file_index "
            "WHERE group_id = ANY(%s) AND is_duplicate = 0 ORDER BY subband_num NULLS FIRST",
            (list(group_ids),),
        )
        for r in rows:
            out[r[0]].append(MemberFile(*r))
        return out

    # -- events ---------------------------------------------------------------------------
    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        # ids in commit order: a sequence hands them out in call order, but a transaction
        # that took id 10 may commit after the one that took 11, and a follower that read
        # 11 would skip 10 for good. Holding this lock until COMMIT orders them.
        self.c.x("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_EVENTS,))
        event_id = int(
            self.c.value(
                "INSERT INTO events (type, group_id, payload, created_at) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (type_, group_id, json.dumps(payload, sort_keys=True), now),
            )
        )
        # delivered at COMMIT, never for a rolled-back event
        self.c.x("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(event_id)))
        return event_id

    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = self.c.all(
            "SELECT id, type, group_id, payload, created_at FROM events WHERE id > %s "
            "ORDER BY id LIMIT %s",
            (after_id, limit),
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4]) for r in rows]

    def wait_for_events(self, after_id: int, timeout: float) -> None:
        """LISTEN on a connection of its own (opened on first use), then look: an event
        committed between the look and the wait is still announced, so none is missed
        and nothing polls."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                self._listener = connect(self.uri, application="dsa110-ingest events")
                self._listener.execute(f"LISTEN {EVENTS_CHANNEL}")
            self._drain_notifications()
        except self._pg.Error as e:
            raise translate(e, self.name, "listening for events") from None
        newest = self.c.value("SELECT MAX(id) FROM events")
        if newest is not None and int(newest) > after_id:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            for _ in self._listener.notifies(timeout=remaining, stop_after=1):
                return
        except self._pg.Error as e:
            raise translate(e, self.name, "waiting for events") from None

    def _drain_notifications(self) -> None:
        """Discard announcements already read from the socket: their events are covered by
        the MAX(id) look that follows."""
        pgconn = self._listener.pgconn
        while select.select([pgconn.socket], [], [], 0)[0]:
            pgconn.consume_input()
            if pgconn.notifies() is None:
                break
        while pgconn.notifies() is not None:
            pass

    def event_id_high(self) -> int:
        v = self.c.value(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass)"
        )
        return int(v) if v is not None else 0

    def raise_event_id_floor(self, floor: int) -> bool:
        with self.transaction("raising the event id floor"):
            self.c.x("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_EVENTS,))
            if self.event_id_high() >= floor:
                return False
            self.c.x("SELECT setval(pg_get_serial_sequence('events', 'id'), %s, true)", (floor,))
            return True

    def last_activity(self) -> tuple[float, float]:
        f = self.c.value("SELECT MAX(indexed_at) FROM hdf5_file_index")
        e = self.c.value("SELECT created_at FROM events ORDER BY id DESC LIMIT 1")
        return float(f or 0), float(e or 0)

    def count_events(self, type_: str | None = None) -> int:
        if type_:
            return int(self.c.value("SELECT COUNT(*) FROM events WHERE type = %s", (type_,)))
        return int(self.c.value("SELECT COUNT(*) FROM events"))

    # -- conversion jobs ------------------------------------------------------------------
    def enqueue_job(
        self, group_id: str, obs_mjd: float | None, now: float, partial: bool = False
    ) -> None:
        self.c.x(
            "INSERT INTO conversion_jobs (group_id, state, obs_mjd, partial, created_at, "
            "updated_at) VALUES (%s, 'pending', %s, %s, %s, %s) "
            "ON CONFLICT (group_id) DO NOTHING",
            (group_id, obs_mjd, int(partial), now, now),
        )

    def claim_job(
        self, owner: str, now: float, lease_s: float, newest_first: bool
    ) -> ConversionJob | None:
        # SQLite's order, NULLs included: first when ascending, last when descending
        order = "DESC NULLS LAST" if newest_first else "ASC NULLS FIRST"
        by = f"ORDER BY obs_mjd {order}, group_id {order.split()[0]}"
        args = {"now": now, "owner": owner, "until": now + lease_s, "token": uuid.uuid4().hex}
        # look without taking a row lock first: an idle queue costs one index probe
        if self.c.first(f"SELECT 1 FROM conversion_jobs WHERE {_CLAIMABLE} LIMIT 1", args) is None:
            return None
        with self.transaction("claiming a conversion"):
            # SKIP LOCKED: a job another worker is claiming right now is passed over, not
            # waited for, so workers on every node take different jobs without queueing
            row = self.c.first(
                "UPDATE conversion_jobs j SET state = 'running', lease_owner = %(owner)s, "
                "lease_expires_at = %(until)s, attempts = j.attempts + 1, started_at = %(now)s, "
                "updated_at = %(now)s, attempt_token = %(token)s FROM ("
                f"SELECT group_id FROM conversion_jobs WHERE {_CLAIMABLE} {by} LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) c WHERE j.group_id = c.group_id "
                f"RETURNING {', '.join('j.' + c for c in JOB_COLUMNS)}",
                args,
            )
        return None if row is None else ConversionJob(*row)

    def lease_job(
        self, group_id: str, owner: str, now: float, lease_s: float
    ) -> ConversionJob | None:
        with self.transaction("leasing a conversion"):
            row = self.c.first(
                "SELECT state, lease_expires_at FROM conversion_jobs WHERE group_id = %s "
                "FOR UPDATE",
                (group_id,),
            )
            if row is None:
                return None
            if row[0] == "running" and (row[1] or 0) > now:
                return None
            out = self.c.first(
                "UPDATE conversion_jobs SET state = 'running', lease_owner = %s, "
                "lease_expires_at = %s, attempts = attempts + 1, started_at = %s, "
                f"updated_at = %s WHERE group_id = %s RETURNING {_JOB_COLS}",
                (owner, now + lease_s, now, now, group_id),
            )
        return None if out is None else ConversionJob(*out)

    def renew_lease(self, group_id: str, owner: str, until: float) -> bool:
        with self.transaction("renewing a conversion lease"):
            return (
                self.c.count(
                    "UPDATE conversion_jobs SET lease_expires_at = %s WHERE group_id = %s AND "
                    "lease_owner = %s AND state = 'running'",
                    (until, group_id, owner),
                )
                == 1
            )

    def job(self, group_id: str) -> ConversionJob | None:
        row = self.c.first(
            f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE group_id = %s", (group_id,)
        )
        return None if row is None else ConversionJob(*row)

    def finish_job(
        self,
        group_id: str,
        owner: str | None,
        state: str,
        now: float,
        *,
        ms_path: str | None = None,
        error: str | None = None,
        next_attempt_at: float = 0.0,
        refund_attempt: bool = False,
        token: str = "",
    ) -> bool:
        cond = ""
        args: list[Any] = [
            state,
            ms_path,
            error,
            next_attempt_at,
            int(refund_attempt),
            now,
            now,
            group_id,
        ]
        if owner:
            cond += " AND lease_owner = %s"
            args.append(owner)
        if token:
            cond += " AND attempt_token = %s"
            args.append(token)
        return (
            self.c.count(
                "UPDATE conversion_jobs SET state = %s, ms_path = COALESCE(%s, ms_path), "
                "last_error = %s, next_attempt_at = %s, lease_owner = NULL, "
                "lease_expires_at = NULL, attempts = GREATEST(0, attempts - %s), "
                f"finished_at = %s, updated_at = %s WHERE group_id = %s{cond}",
                args,
            )
            == 1
        )

    def release_job(self, group_id: str, owner: str, now: float) -> None:
        with self.transaction("releasing a conversion at shutdown"):
            self.c.x(
                "UPDATE conversion_jobs SET state = 'pending', "
                "attempts = GREATEST(0, attempts - 1), lease_owner = NULL, "
                "lease_expires_at = NULL, last_error = 'interrupted by shutdown', "
                "updated_at = %s WHERE group_id = %s AND lease_owner = %s",
                (now, group_id, owner),
            )

    def requeue_job(
        self, group_id: str, owner: str, token: str, now: float, error: str, next_attempt_at: float
    ) -> bool:
        return (
            self.c.count(
                "UPDATE conversion_jobs SET state = 'pending', "
                "attempts = GREATEST(0, attempts - 1), lease_owner = NULL, "
                "lease_expires_at = NULL, last_error = %s, "
                "next_attempt_at = %s, updated_at = %s WHERE group_id = %s AND lease_owner = %s "
                "AND attempt_token IS NOT DISTINCT FROM %s",
                (error, next_attempt_at, now, group_id, owner, token or None),
            )
            == 1
        )

    def retry_failed_job(self, group_id: str, now: float) -> bool:
        with self.transaction("resetting a conversion"):
            return (
                self.c.count(
                    "UPDATE conversion_jobs SET state = 'pending', attempts = 0, "
                    "next_attempt_at = 0, last_error = NULL, updated_at = %s "
                    "WHERE group_id = %s AND state = 'failed'",
                    (now, group_id),
                )
                == 1
            )

    def troubled_jobs(self, limit: int = 50) -> list[ConversionJob]:
        rows = self.c.all(
            f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE state = 'failed' OR "
            "(state = 'pending' AND last_error IS NOT NULL) ORDER BY updated_at DESC LIMIT %s",
            (limit,),
        )
        return [ConversionJob(*r) for r in rows]

    def jobs_open(self) -> int:
        return int(
            self.c.value(
                "SELECT COUNT(*) FROM conversion_jobs WHERE state IN ('pending', 'running')"
            )
        )

    def record_converted(
        self, group_id: str, ms_path: str, obs_mjd: float | None, now: float
    ) -> None:
        self.c.x(
            "INSERT INTO conversion_jobs (group_id, state, obs_mjd, ms_path, created_at, "
            "updated_at, finished_at) VALUES (%s, 'converted', %s, %s, %s, %s, %s) "
            "ON CONFLICT (group_id) DO UPDATE SET state = 'converted', "
            "ms_path = EXCLUDED.ms_path",
            (group_id, obs_mjd, ms_path, now, now, now),
        )

    # -- meta, status, heartbeats, node lock ----------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        self.c.x(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
            "value = EXCLUDED.value",
            (key, value),
        )

    def backup_to(self, dest: Path) -> None:
        dump_database(self.uri, self.name, dest)

    def integrity(self) -> str:
        return integrity_report(self.c.live(), self.name, INDEX_TABLES, INDEX_MIGRATIONS)

    def counts(self) -> IndexCounts:
        files = dict(
            self.c.all(
                "SELECT CASE WHEN stored = 0 THEN 'missing' WHEN is_duplicate = 1 "
                "THEN 'conflict' ELSE 'indexed' END AS s, COUNT(*) FROM hdf5_file_index "
                "GROUP BY s"
            )
        )
        files["rejected"] = int(self.c.value("SELECT COUNT(*) FROM rejected_files"))
        groups, jobs = self.state_counts()
        events = dict(self.c.all("SELECT type, COUNT(*) FROM events GROUP BY type"))
        return IndexCounts(files=files, groups=groups, conversions=jobs, events=events)

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        groups = dict(self.c.all("SELECT state, COUNT(*) FROM groups GROUP BY state"))
        jobs = dict(self.c.all("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state"))
        return groups, jobs

    def write_heartbeat(
        self,
        node: str,
        pid: int,
        hostname: str,
        started_at: float,
        now: float,
        status: dict[str, Any],
    ) -> None:
        with self.transaction("writing the heartbeat"):
            self.c.x(
                f"INSERT INTO heartbeat ({_HEARTBEAT_COLS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (node) DO UPDATE SET pid = EXCLUDED.pid, hostname = "
                "EXCLUDED.hostname, started_at = EXCLUDED.started_at, updated_at = "
                "EXCLUDED.updated_at, status = EXCLUDED.status",
                (node, pid, hostname, started_at, now, json.dumps(status, sort_keys=True)),
            )

    def heartbeat(self, node: str) -> Heartbeat | None:
        row = self.c.first(f"SELECT {_HEARTBEAT_COLS} FROM heartbeat WHERE node = %s", (node,))
        return None if row is None else _heartbeat(row)

    def heartbeats(self) -> list[Heartbeat]:
        rows = self.c.all(f"SELECT {_HEARTBEAT_COLS} FROM heartbeat ORDER BY node")
        return [_heartbeat(r) for r in rows]

    def try_lock_node(self, node: str) -> bool:
        """A session advisory lock on this store's connection: held while the daemon's
        connection lives, released by the server when the process dies (even SIGKILL)."""
        if node in self.c.nodes_locked:
            return True
        if not self.c.lock_node(node):
            return False
        self.c.nodes_locked.add(node)
        return True

    def unlock_node(self, node: str) -> None:
        if node in self.c.nodes_locked:
            self.c.nodes_locked.discard(node)
            self.c.value("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_NODE, node))
