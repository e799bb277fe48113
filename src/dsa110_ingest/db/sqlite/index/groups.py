"""The SQLite index's groups: clustering, state, member files."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from dsa110_ingest.db.records import (
    GROUP_COLUMNS,
    FileRecord,
    Group,
    GroupSpan,
    GroupSummary,
    MemberFile,
)
from dsa110_ingest.db.sqlite.index.files import FILE_COLS
from dsa110_ingest.db.store.groups import GroupStore

_GROUP_COLS = ", ".join(GROUP_COLUMNS)


def _group(row: Sequence[Any] | None) -> Group | None:
    return None if row is None else Group(*row)


class SqliteGroups(GroupStore):
    """The groups family of :class:`~dsa110_ingest.db.sqlite.index.SqliteIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    conn: sqlite3.Connection
    _span_cache: float | None

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
        """Move a collecting group's files into ``target`` and drop it (a bridging file)."""
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

    def subband_taken(self, group_id: str, subband: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM hdf5_file_index WHERE group_id = ? AND subband_num = ? "
                "AND is_duplicate = 0 AND stored = 1 LIMIT 1",
                (group_id, subband),
            ).fetchone()
            is not None
        )

    def refresh_group(
        self, group_id: str, min_ts: float, max_ts: float, now: float, *, history: bool = False
    ) -> Group:
        """Recount a group from its files and store span and counts; returns the row."""
        self.conn.execute(
            "UPDATE groups SET min_ts = MIN(min_ts, ?), max_ts = MAX(max_ts, ?), "
            "last_seen_at = ?, (n_subbands, n_conflicts, start_mjd, end_mjd) = ("
            # a member no longer on disk holds no subband: it cannot be converted
            "SELECT COUNT(DISTINCT CASE WHEN is_duplicate = 0 AND (stored = 1 OR ?) "
            "THEN subband_num END), "
            "COALESCE(SUM(is_duplicate), 0), MIN(start_mjd), MAX(end_mjd) "
            "FROM hdf5_file_index WHERE group_id = ?) WHERE group_id = ?",
            (min_ts, max_ts, now, bool(history), group_id, group_id),
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

    def group(self, group_id: str) -> Group | None:
        return _group(
            self.conn.execute(
                f"SELECT {_GROUP_COLS} FROM groups WHERE group_id = ?", (group_id,)
            ).fetchone()
        )

    def collecting_groups(self, obs_before_ts: float | None = None) -> list[Group]:
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

    def group_files(self, group_id: str, *, members_only: bool = True) -> list[FileRecord]:
        cond = " AND is_duplicate = 0" if members_only else ""
        rows = self.conn.execute(
            f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE group_id = ?{cond} "
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
