"""The SQLite index store: files, storage locations, groups, events, conversion jobs.

Every SQL statement touching the SQLite index is in this module (its schema and
migrations are in ``schema.py``). Rows leave as the records of ``db.records``.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from dsa110_ingest.db.sqlite import copy
from dsa110_ingest.db.sqlite.connection import backup, connect, transaction, translate
from dsa110_ingest.db.sqlite.migrations import migrate, schema_version
from dsa110_ingest.db.sqlite.schema import INDEX_MIGRATIONS
from dsa110_ingest.db.store import IndexStore
from dsa110_ingest.naming import path_bytes, path_text

_UPSERT_FILE = (
    f"INSERT INTO hdf5_file_index ({', '.join(FILE_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in FILE_COLUMNS)}) "
    "ON CONFLICT(path) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in FILE_COLUMNS if c != "path")
)
_INSERT_FILE_IF_NEW = (
    f"INSERT INTO hdf5_file_index ({', '.join(FILE_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in FILE_COLUMNS)}) ON CONFLICT(path) DO NOTHING"
)
_FILE_COLS = ", ".join(FILE_COLUMNS)
_GROUP_COLS = ", ".join(GROUP_COLUMNS)
_JOB_COLS = ", ".join(JOB_COLUMNS)
_LOCATION_COLS = ", ".join(field_names(Location))
_REJECTED_COLS = ", ".join(field_names(RejectedFile))
_HEARTBEAT_COLS = "node, pid, hostname, started_at, updated_at, status"
# a read-only open does not migrate: `status` of a DB that a not yet restarted older daemon
# still runs reads the columns as they were (node '' / the host name), not an error
_NODE_VERSION = 1 + [m.name for m in INDEX_MIGRATIONS].index("storage_locations.node")
_HEARTBEAT_VERSION = 1 + [m.name for m in INDEX_MIGRATIONS].index("heartbeat per node")
# SQLite has no LISTEN: a follower re-reads at most this often
EVENT_POLL_S = 0.5


def _file(row: Sequence[Any] | None) -> FileRecord | None:
    return None if row is None else FileRecord(*row)


def _group(row: Sequence[Any] | None) -> Group | None:
    return None if row is None else Group(*row)


def _job(row: Sequence[Any] | None) -> ConversionJob | None:
    return None if row is None else ConversionJob(*row)


def _heartbeat(row: Sequence[Any]) -> Heartbeat:
    return Heartbeat(*row[:5], status=json.loads(row[5] or "{}"))


def open_index_connection(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the SQLite index, migrated to the current schema unless readonly."""
    conn = connect(path, readonly=readonly)
    if not readonly:
        migrate(conn, path, INDEX_MIGRATIONS)
    return conn


class SqliteIndexStore(IndexStore):
    """The index in one SQLite file. Not thread-safe: one owner thread per instance."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.conn = open_index_connection(self.path, readonly=readonly)
        self._span_cache: float | None = None
        version = schema_version(self.conn)
        self._location_cols = (
            _LOCATION_COLS
            if version >= _NODE_VERSION
            else _LOCATION_COLS.replace(", node", ", '' AS node")
        )
        self._heartbeat_from = (
            "heartbeat"
            if version >= _HEARTBEAT_VERSION
            else "(SELECT COALESCE(hostname, '') AS node, pid, hostname, started_at, "
            "updated_at, status FROM heartbeat)"
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteIndexStore:
        return self

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        # looked up in the module at call time: benchmarks/_traced_daemon.py wraps it
        with transaction(self.conn, self.path, doing):
            yield

    def dbapi_connection(self) -> sqlite3.Connection:
        return self.conn

    # -- storage locations --------------------------------------------------------
    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        with self.transaction(f"registering storage location {name}"):
            row = self.conn.execute(
                "SELECT id FROM storage_locations WHERE name = ? OR path = ? "
                "ORDER BY (name = ?) DESC LIMIT 1",
                (name, path, name),
            ).fetchone()
            if row:
                self.conn.execute(
                    "UPDATE storage_locations SET name = ?, path = ?, role = ?, description = ?, "
                    "node = ? WHERE id = ?",
                    (name, path, role, description, node, row[0]),
                )
                return int(row[0])
            cur = self.conn.execute(
                "INSERT INTO storage_locations (name, path, role, description, node) "
                "VALUES (?,?,?,?,?)",
                (name, path, role, description, node),
            )
            return int(cur.lastrowid or 0)

    def locations(self, node: str | None = None) -> list[Location]:
        q = f"SELECT {self._location_cols} FROM storage_locations"
        args: tuple[str, ...] = ()
        if node is not None:
            q += " WHERE node = ?"
            args = (node,)
        return [Location(*r) for r in self.conn.execute(q + " ORDER BY id", args)]

    # -- what is already known, for the scan's fast path --------------------------
    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        rows = self.conn.execute(
            "SELECT path, file_size_bytes, mtime_ns, stored FROM hdf5_file_index "
            "WHERE storage_location_id = ?",
            (location_id,),
        )
        return {r[0]: KnownFile(r[1], r[2], r[3]) for r in rows}

    def known_rejected(self) -> dict[str, KnownFile]:
        rows = self.conn.execute("SELECT path, file_size_bytes, mtime_ns FROM rejected_files")
        return {r[0]: KnownFile(r[1], r[2], 0) for r in rows}

    # -- file rows (call inside tx) -----------------------------------------------
    def get_file(self, path: str) -> FileRecord | None:
        return _file(
            self.conn.execute(
                f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE path = ?", (path_text(path),)
            ).fetchone()
        )

    def files_named(self, filename: str) -> list[FileRecord]:
        return [
            FileRecord(*r)
            for r in self.conn.execute(
                f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE filename = ?", (filename,)
            )
        ]

    def upsert_file(self, row: Mapping[str, Any]) -> None:
        self.conn.execute(_UPSERT_FILE, {c: row.get(c) for c in FILE_COLUMNS})

    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        self.conn.execute("DELETE FROM rejected_files WHERE path = ?", (new,))
        self.conn.execute(
            "UPDATE hdf5_file_index SET path = ?, storage_location_id = ?, stored = 1, "
            "file_size_bytes = ?, modified_time = ?, mtime_ns = ? WHERE path = ?",
            (new, location_id, size, mtime, mtime_ns, old),
        )

    def mark_missing(self, paths: Iterable[str]) -> int:
        n = 0
        for p in paths:
            n += self.conn.execute(
                "UPDATE hdf5_file_index SET stored = 0 WHERE path = ? AND stored = 1",
                (path_text(p),),
            ).rowcount
        return n

    def subband_taken(self, group_id: str, subband: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM hdf5_file_index WHERE group_id = ? AND subband_num = ? "
                "AND is_duplicate = 0 LIMIT 1",
                (group_id, subband),
            ).fetchone()
            is not None
        )

    def set_duplicate(self, path: str, dup: int) -> None:
        """Take a member out of (1) or back into (0) its group's subband count."""
        self.conn.execute("UPDATE hdf5_file_index SET is_duplicate = ? WHERE path = ?", (dup, path))

    # -- rejected files -----------------------------------------------------------
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
        self.conn.execute(
            "INSERT INTO rejected_files (path, reason, detail, file_size_bytes, mtime_ns, "
            "first_seen_at, last_seen_at, attempts, storage_location_id, path_bytes) "
            "VALUES (?,?,?,?,?,?,?,1,?,?) ON CONFLICT(path) DO UPDATE SET reason = excluded.reason,"
            " detail = excluded.detail, file_size_bytes = excluded.file_size_bytes, "
            "mtime_ns = excluded.mtime_ns, last_seen_at = excluded.last_seen_at, "
            "attempts = rejected_files.attempts + 1",
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
        self.conn.execute("DELETE FROM rejected_files WHERE path = ?", (path_text(path),))

    def rejected(self) -> list[RejectedFile]:
        return [
            RejectedFile(*r)
            for r in self.conn.execute(
                f"SELECT {_REJECTED_COLS} FROM rejected_files ORDER BY last_seen_at DESC"
            )
        ]

    # -- groups (call inside tx) --------------------------------------------------
    def lock_time_window(self, ts: float, tolerance: float) -> None:
        """BEGIN IMMEDIATE already serialises every writer of the file."""

    def groups_near(self, ts: float, tolerance: float) -> list[GroupSpan]:
        rows = self.conn.execute(
            "SELECT group_id, min_ts, max_ts, state FROM groups WHERE max_ts >= ? AND min_ts <= ?",
            (ts - tolerance, ts + tolerance),
        )
        return [GroupSpan(r[0], r[1], r[2], r[3]) for r in rows]

    def create_group(
        self, group_id: str, ts: float, expected: int, now: float, deadline: float
    ) -> None:
        self.conn.execute(
            f"INSERT INTO groups ({_GROUP_COLS}) VALUES (?, 'collecting', 0, ?, 0, ?, ?, NULL, "
            "NULL, ?, ?, NULL, NULL, ?)",
            (group_id, expected, ts, ts, now, now, deadline),
        )

    def absorb_group(self, target: str, other: str) -> None:
        """Move an open group's files into ``target`` and drop it (a bridging file)."""
        self.conn.execute(
            "UPDATE groups SET first_seen_at = MIN(first_seen_at, (SELECT first_seen_at FROM "
            "groups WHERE group_id = :o)), deadline_at = MIN(deadline_at, (SELECT deadline_at "
            "FROM groups WHERE group_id = :o)) WHERE group_id = :t",
            {"t": target, "o": other},
        )
        # members of the absorbed group whose subband the target already has become conflicts
        self.conn.execute(
            "UPDATE hdf5_file_index SET is_duplicate = 1 WHERE group_id = :o AND EXISTS ("
            "SELECT 1 FROM hdf5_file_index t WHERE t.group_id = :t AND t.is_duplicate = 0 "
            "AND t.subband_num = hdf5_file_index.subband_num)",
            {"t": target, "o": other},
        )
        self.conn.execute(
            "UPDATE hdf5_file_index SET group_id = ? WHERE group_id = ?", (target, other)
        )
        self.conn.execute("DELETE FROM groups WHERE group_id = ?", (other,))

    def rename_group(self, old: str, new: str) -> None:
        self.conn.execute("UPDATE groups SET group_id = ? WHERE group_id = ?", (new, old))
        self.conn.execute("UPDATE hdf5_file_index SET group_id = ? WHERE group_id = ?", (new, old))

    def refresh_group(self, group_id: str, min_ts: float, max_ts: float, now: float) -> Group:
        """Recount a group from its files and store span and counts; returns the row."""
        self.conn.execute(
            "UPDATE groups SET min_ts = MIN(min_ts, ?), max_ts = MAX(max_ts, ?), "
            "last_seen_at = ?, (n_subbands, n_conflicts, start_mjd, end_mjd) = ("
            "SELECT COUNT(DISTINCT CASE WHEN is_duplicate = 0 THEN subband_num END), "
            "COALESCE(SUM(is_duplicate), 0), MIN(start_mjd), MAX(end_mjd) "
            "FROM hdf5_file_index WHERE group_id = ?) WHERE group_id = ?",
            (min_ts, max_ts, now, group_id, group_id),
        )
        row = self.group(group_id)
        assert row is not None, group_id  # refreshed above, inside this transaction
        if row.end_mjd is not None and row.start_mjd is not None:
            span = row.end_mjd - row.start_mjd
            if span > self._max_span():
                self.conn.execute(
                    "INSERT INTO meta VALUES ('max_group_span_mjd', ?) ON CONFLICT(key) DO "
                    "UPDATE SET value = MAX(CAST(value AS REAL), excluded.value)",
                    (span,),
                )
                self._span_cache = None  # re-read: the transaction may yet roll back
        return row

    def _max_span(self) -> float:
        if self._span_cache is None:
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'max_group_span_mjd'"
            ).fetchone()
            self._span_cache = float(row[0]) if row else 0.0
        return self._span_cache

    def set_group_state(self, group_id: str, state: str, now: float) -> None:
        col = {"complete": "completed_at", "incomplete": "incomplete_at"}.get(state)
        extra = f", {col} = COALESCE({col}, ?)" if col else ""
        args: tuple[Any, ...] = (state, now, group_id) if col else (state, group_id)
        self.conn.execute(f"UPDATE groups SET state = ?{extra} WHERE group_id = ?", args)

    def open_groups(self, obs_before_ts: float | None = None) -> list[Group]:
        """Groups still collecting (few: the observations of the last minutes); with
        ``obs_before_ts``, only those observed before it."""
        q = f"SELECT {_GROUP_COLS} FROM groups WHERE state = 'collecting'"
        args: tuple[float, ...] = ()
        if obs_before_ts is not None:
            q += " AND max_ts <= ?"
            args = (obs_before_ts,)
        return [Group(*r) for r in self.conn.execute(q + " ORDER BY min_ts", args)]

    def partial_candidates(
        self, older_than: float, min_subbands: int, obs_before_ts: float | None = None
    ) -> list[Group]:
        """Incomplete groups to convert anyway: first seen long enough ago (or, after a
        full rescan, observed long enough ago), with enough subbands, not yet queued."""
        rows = self.conn.execute(
            f"SELECT {_GROUP_COLS} FROM groups g WHERE state = 'incomplete' "
            "AND (first_seen_at <= ? OR max_ts <= ?) AND n_subbands >= ? AND NOT EXISTS "
            "(SELECT 1 FROM conversion_jobs j WHERE j.group_id = g.group_id) ORDER BY min_ts",
            (
                older_than,
                obs_before_ts if obs_before_ts is not None else float("-inf"),
                min_subbands,
            ),
        )
        return [Group(*r) for r in rows]

    def group(self, group_id: str) -> Group | None:
        return _group(
            self.conn.execute(
                f"SELECT {_GROUP_COLS} FROM groups WHERE group_id = ?", (group_id,)
            ).fetchone()
        )

    def group_files(self, group_id: str, *, members_only: bool = True) -> list[FileRecord]:
        cond = " AND is_duplicate = 0" if members_only else ""
        rows = self.conn.execute(
            f"SELECT {_FILE_COLS} FROM hdf5_file_index WHERE group_id = ?{cond} "
            "ORDER BY subband_num, is_duplicate, path",
            (group_id,),
        )
        return [FileRecord(*r) for r in rows]

    def groups_overlapping(
        self, start_mjd: float, end_mjd: float, state: str | None = None
    ) -> list[Group]:
        self._span_cache = None  # another process may have widened it
        span = self._max_span()
        # start_mjd is indexed; bounding it below by the longest group keeps this a range scan
        q = (
            f"SELECT {_GROUP_COLS} FROM groups WHERE start_mjd >= ? AND start_mjd <= ? "
            "AND end_mjd >= ?"
        )
        args: list[Any] = [start_mjd - span - 1e-9, end_mjd, start_mjd]
        if state:
            q += " AND state = ?"
            args.append(state)
        return [Group(*r) for r in self.conn.execute(q + " ORDER BY start_mjd", args)]

    def list_groups(
        self,
        since_ts: float | None,
        until_ts: float | None,
        state: str | None,
        limit: int | None = None,
    ) -> list[GroupSummary]:
        q = (
            f"SELECT g.{_GROUP_COLS.replace(', ', ', g.')}, j.state AS convert_state, "
            "j.attempts, j.last_error, j.ms_path, j.next_attempt_at "
            "FROM groups g LEFT JOIN conversion_jobs j USING (group_id) WHERE 1=1"
        )
        args: list[Any] = []
        if since_ts is not None:
            q += " AND g.max_ts >= ?"
            args.append(since_ts)
        if until_ts is not None:
            q += " AND g.min_ts <= ?"
            args.append(until_ts)
        if state:
            q += " AND (g.state = ? OR j.state = ?)"
            args += [state, state]
        q += " ORDER BY g.min_ts"
        if limit:
            q += f" LIMIT {int(limit)}"
        return [GroupSummary(*r) for r in self.conn.execute(q, args)]

    def files_of_groups(self, group_ids: Sequence[str]) -> dict[str, list[MemberFile]]:
        out: dict[str, list[MemberFile]] = {g: [] for g in group_ids}
        for i in range(0, len(group_ids), 500):
            chunk = group_ids[i : i + 500]
            rows = self.conn.execute(
                "SELECT group_id, path, subband_num, stored FROM hdf5_file_index "
                f"WHERE group_id IN ({','.join('?' * len(chunk))}) AND is_duplicate = 0 "
                "ORDER BY subband_num",
                chunk,
            )
            for r in rows:
                out[r[0]].append(MemberFile(*r))
        return out

    # -- events (call inside tx) --------------------------------------------------
    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO events (type, group_id, payload, created_at) VALUES (?,?,?,?)",
            (type_, group_id, json.dumps(payload, sort_keys=True), now),
        )
        return int(cur.lastrowid or 0)

    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = self.conn.execute(
            "SELECT id, type, group_id, payload, created_at FROM events WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4]) for r in rows]

    def wait_for_events(self, after_id: int, timeout: float) -> None:
        time.sleep(max(0.0, min(timeout, EVENT_POLL_S)))

    def event_id_high(self) -> int:
        """The largest event id ever handed out by this DB (AUTOINCREMENT's counter)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def raise_event_id_floor(self, floor: int) -> bool:
        """Make the next event id larger than ``floor`` (ids are never reused, even in a DB
        that replaced a lost one). True when the counter had to move."""
        with self.transaction("raising the event id floor"):
            if self.event_id_high() >= floor:
                return False
            if (
                self.conn.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (floor,)
                ).rowcount
                == 0
            ):
                self.conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (floor,)
                )
            return True

    def last_activity(self) -> tuple[float, float]:
        """(last file row written, last event) as unix times; 0 when none."""
        c = self.conn
        f = c.execute("SELECT MAX(indexed_at) FROM hdf5_file_index").fetchone()[0]
        e = c.execute("SELECT created_at FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return float(f or 0), float(e[0] if e else 0)

    def count_events(self, type_: str | None = None) -> int:
        if type_:
            return int(
                self.conn.execute(
                    "SELECT COUNT(*) FROM events WHERE type = ?", (type_,)
                ).fetchone()[0]
            )
        return int(self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- conversion jobs ----------------------------------------------------------
    def enqueue_job(
        self, group_id: str, obs_mjd: float | None, now: float, partial: bool = False
    ) -> None:
        self.conn.execute(
            "INSERT INTO conversion_jobs (group_id, state, obs_mjd, partial, created_at, "
            "updated_at) VALUES (?, 'pending', ?, ?, ?, ?) ON CONFLICT(group_id) DO NOTHING",
            (group_id, obs_mjd, int(partial), now, now),
        )

    _CLAIMABLE = (
        f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE ((state = 'pending' AND next_attempt_at "
        "<= :now) OR (state = 'running' AND lease_expires_at < :now)) "
    )

    def claim_job(
        self, owner: str, now: float, lease_s: float, newest_first: bool
    ) -> ConversionJob | None:
        order = "DESC" if newest_first else "ASC"
        q = self._CLAIMABLE + f"ORDER BY obs_mjd {order}, group_id {order} LIMIT 1"
        # look without the write lock first: an idle queue must not contend with indexing
        if self.conn.execute(q, {"now": now}).fetchone() is None:
            return None
        with self.transaction("claiming a conversion"):
            row = _job(self.conn.execute(q, {"now": now}).fetchone())
            if row is None:
                return None  # another worker took it between the look and the lock
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'running', lease_owner = ?, "
                "lease_expires_at = ?, attempts = attempts + 1, started_at = ?, updated_at = ?, "
                "attempt_token = ? WHERE group_id = ?",
                (owner, now + lease_s, now, now, uuid.uuid4().hex, row.group_id),
            )
            return self.job(row.group_id)

    def lease_job(
        self, group_id: str, owner: str, now: float, lease_s: float
    ) -> ConversionJob | None:
        """Take the lease of one group's job whatever its state (``convert`` in the
        foreground), unless another owner holds a live lease: then None."""
        with self.transaction("leasing a conversion"):
            row = self.job(group_id)
            if row is None:
                return None
            if row.state == "running" and (row.lease_expires_at or 0) > now:
                return None
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'running', lease_owner = ?, "
                "lease_expires_at = ?, attempts = attempts + 1, started_at = ?, updated_at = ? "
                "WHERE group_id = ?",
                (owner, now + lease_s, now, now, group_id),
            )
            return self.job(group_id)

    def renew_lease(self, group_id: str, owner: str, until: float) -> bool:
        with self.transaction("renewing a conversion lease"):
            return (
                self.conn.execute(
                    "UPDATE conversion_jobs SET lease_expires_at = ? WHERE group_id = ? AND "
                    "lease_owner = ? AND state = 'running'",
                    (until, group_id, owner),
                ).rowcount
                == 1
            )

    def job(self, group_id: str) -> ConversionJob | None:
        return _job(
            self.conn.execute(
                f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE group_id = ?", (group_id,)
            ).fetchone()
        )

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
        """Set a job's outcome; False when the lease was lost to another worker, or
        (with ``token``) when the attempt was given up and another one started.
        ``refund_attempt``: the node, not the group, failed; the attempt does not count."""
        cond = " AND lease_owner = ?" if owner else ""
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
            args.append(owner)
        if token:
            cond += " AND attempt_token = ?"
            args.append(token)
        return (
            self.conn.execute(
                "UPDATE conversion_jobs SET state = ?, ms_path = COALESCE(?, ms_path), "
                "last_error = ?, next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL,"
                " attempts = MAX(0, attempts - ?),"
                f" finished_at = ?, updated_at = ? WHERE group_id = ?{cond}",
                args,
            ).rowcount
            == 1
        )

    def release_job(self, group_id: str, owner: str, now: float) -> None:
        """Give back a job interrupted by our own shutdown: not a failed attempt."""
        with self.transaction("releasing a conversion at shutdown"):
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'pending', attempts = MAX(0, attempts - 1), "
                "lease_owner = NULL, lease_expires_at = NULL, last_error = 'interrupted by "
                "shutdown', updated_at = ? WHERE group_id = ? AND lease_owner = ?",
                (now, group_id, owner),
            )

    def requeue_job(
        self, group_id: str, owner: str, token: str, now: float, error: str, next_attempt_at: float
    ) -> bool:
        """An attempt lost to the executor (worker gone, scheduler unreachable): pending
        again, and not counted against the group's attempts."""
        return (
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'pending', attempts = MAX(0, attempts - 1), "
                "lease_owner = NULL, lease_expires_at = NULL, last_error = ?, "
                "next_attempt_at = ?, updated_at = ? WHERE group_id = ? AND lease_owner = ? "
                "AND attempt_token IS ?",
                (error, next_attempt_at, now, group_id, owner, token or None),
            ).rowcount
            == 1
        )

    def retry_failed_job(self, group_id: str, now: float) -> bool:
        """failed -> pending with fresh attempts; False when the job is not failed."""
        with self.transaction("resetting a conversion"):
            return (
                self.conn.execute(
                    "UPDATE conversion_jobs SET state = 'pending', attempts = 0, "
                    "next_attempt_at = 0, last_error = NULL, updated_at = ? "
                    "WHERE group_id = ? AND state = 'failed'",
                    (now, group_id),
                ).rowcount
                == 1
            )

    def troubled_jobs(self, limit: int = 50) -> list[ConversionJob]:
        """Failed jobs, and pending ones that have an error (waiting for a retry)."""
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM conversion_jobs "
            "WHERE state = 'failed' OR (state = 'pending' AND last_error IS NOT NULL) "
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [ConversionJob(*r) for r in rows]

    def jobs_open(self) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM conversion_jobs WHERE state IN ('pending', 'running')"
            ).fetchone()[0]
        )

    def all_paths(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT path FROM hdf5_file_index")}

    def path_groups(self) -> dict[str, str | None]:
        return dict(self.conn.execute("SELECT path, group_id FROM hdf5_file_index").fetchall())

    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        cur = self.conn.execute(_INSERT_FILE_IF_NEW, {c: row.get(c) for c in FILE_COLUMNS})
        return cur.rowcount == 1

    def record_converted(
        self, group_id: str, ms_path: str, obs_mjd: float | None, now: float
    ) -> None:
        """A group converted before this project knew it (legacy ms_index row)."""
        self.conn.execute(
            "INSERT INTO conversion_jobs (group_id, state, obs_mjd, ms_path, created_at, "
            "updated_at, finished_at) VALUES (?, 'converted', ?, ?, ?, ?, ?) "
            "ON CONFLICT(group_id) DO UPDATE SET state = 'converted', ms_path = excluded.ms_path",
            (group_id, obs_mjd, ms_path, now, now, now),
        )

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def stored_paths(self) -> list[str]:
        return [
            r[0] for r in self.conn.execute("SELECT path FROM hdf5_file_index WHERE stored = 1")
        ]

    def backup_to(self, dest: Path) -> None:
        backup(self.conn, dest)

    def integrity(self) -> str:
        try:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as e:
            raise translate(e, self.path, "checking integrity") from None

    # -- status -------------------------------------------------------------------
    def counts(self) -> IndexCounts:
        c = self.conn
        files = dict(
            c.execute(
                "SELECT CASE WHEN stored = 0 THEN 'missing' WHEN is_duplicate = 1 THEN 'conflict' "
                "ELSE 'indexed' END AS s, COUNT(*) FROM hdf5_file_index GROUP BY s"
            ).fetchall()
        )
        files["rejected"] = c.execute("SELECT COUNT(*) FROM rejected_files").fetchone()[0]
        groups, jobs = self.state_counts()
        events = dict(c.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        return IndexCounts(files=files, groups=groups, conversions=jobs, events=events)

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Groups and conversion jobs by state (cheap: not a scan of the file rows)."""
        c = self.conn
        groups = dict(c.execute("SELECT state, COUNT(*) FROM groups GROUP BY state").fetchall())
        jobs = dict(
            c.execute("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state").fetchall()
        )
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
            self.conn.execute(
                f"INSERT INTO heartbeat ({_HEARTBEAT_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(node) DO UPDATE SET pid = excluded.pid, hostname = "
                "excluded.hostname, started_at = excluded.started_at, updated_at = "
                "excluded.updated_at, status = excluded.status",
                (node, pid, hostname, started_at, now, json.dumps(status, sort_keys=True)),
            )

    def heartbeat(self, node: str) -> Heartbeat | None:
        row = self.conn.execute(
            f"SELECT {_HEARTBEAT_COLS} FROM {self._heartbeat_from} WHERE node = ?", (node,)
        ).fetchone()
        return None if row is None else _heartbeat(row)

    def heartbeats(self) -> list[Heartbeat]:
        rows = self.conn.execute(
            f"SELECT {_HEARTBEAT_COLS} FROM {self._heartbeat_from} ORDER BY node"
        )
        return [_heartbeat(r) for r in rows]

    # -- copying the whole index (migrate --to) -------------------------------------
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.conn, INDEX_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.conn, INDEX_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        return copy.import_rows(self.conn, INDEX_COPY_TABLES, table, rows)

    # -- one daemon per node --------------------------------------------------------
    def try_lock_node(self, node: str) -> bool:
        """The state directory's lock file (runtime.StateLock) already allows one daemon
        per SQLite index, and a SQLite index has one node."""
        return True

    def unlock_node(self, node: str) -> None:
        return None
