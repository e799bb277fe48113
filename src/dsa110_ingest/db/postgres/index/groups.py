"""The PostgreSQL index's groups: clustering under time-window locks, state, files.

Clustering of a time window is serialised by :meth:`PgGroups.lock_time_window`:
transaction-scoped advisory locks on the window's time buckets, widened to the spans of
the groups the window reaches, so two nodes placing files of one observation at the same
moment never both create its group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.index.files import FILE_COLS
from dsa110_ingest.db.records import (
    GROUP_COLUMNS,
    FileRecord,
    Group,
    GroupSpan,
    GroupSummary,
    MemberFile,
)
from dsa110_ingest.db.store.groups import GroupStore
from dsa110_ingest.errors import DatabaseBusyError, DatabaseError

# window locks use the one-bigint advisory key (a lock space apart from the two-int keys
# of schema.py): a namespace in the high 16 bits, the bucket number below
_WINDOW_NS = 0x4453 << 48
_BUCKET_MASK = (1 << 48) - 1
# a window that keeps widening through ever longer groups is a damaged index: stop there
_MAX_WIDEN = 32
_GROUP_COLS = ", ".join(GROUP_COLUMNS)


def window_buckets(lo: float, hi: float, width: float) -> list[int]:
    """Advisory-lock keys of the time buckets of ``width`` seconds covering [lo, hi]."""
    first, last = math.floor(lo / width), math.floor(hi / width)
    return [_WINDOW_NS | (b & _BUCKET_MASK) for b in range(first, last + 1)]


class PgGroups(GroupStore):
    """The groups family of :class:`~dsa110_ingest.db.postgres.index.PostgresIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    c: PgConnection
    readonly: bool
    _span_cache: float | None
    # (ts, tolerance, groups) read by lock_time_window for the groups_near that follows
    _near: tuple[float, float, list[GroupSpan]] | None
    # (group id, its files) read inside the current transaction, until a file is written
    _files: tuple[str, list[FileRecord]] | None

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

    def subband_taken(self, group_id: str, subband: int) -> bool:
        return (
            self.c.first(
                "SELECT 1 FROM hdf5_file_index WHERE group_id = %s AND subband_num = %s "
                "AND is_duplicate = 0 AND stored = 1 LIMIT 1",
                (group_id, subband),
            )
            is not None
        )

    def refresh_group(
        self, group_id: str, min_ts: float, max_ts: float, now: float, *, history: bool = False
    ) -> Group:
        # the row lock first, in a statement of its own: the recount below then runs on a
        # snapshot taken after any other writer of this group committed (a subquery of the
        # UPDATE itself would keep the snapshot from before the wait and miss its file),
        # so of two nodes adding the last two subbands, the second sees all of them
        self.c.x("SELECT 1 FROM groups WHERE group_id = %s FOR UPDATE", (group_id,))
        row = self.c.first(
            "UPDATE groups SET min_ts = LEAST(min_ts, %s), max_ts = GREATEST(max_ts, %s), "
            "last_seen_at = %s, (n_subbands, n_conflicts, start_mjd, end_mjd) = ("
            # a member no longer on disk holds no subband: it cannot be converted
            "SELECT COUNT(DISTINCT CASE WHEN is_duplicate = 0 AND (stored = 1 OR %s) "
            "THEN subband_num END), "
            "COALESCE(SUM(is_duplicate), 0), MIN(start_mjd), MAX(end_mjd) "
            "FROM hdf5_file_index WHERE group_id = %s) WHERE group_id = %s "
            f"RETURNING {_GROUP_COLS}",
            (min_ts, max_ts, now, bool(history), group_id, group_id),
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

    def collecting_groups(self, obs_before_ts: float | None = None) -> list[Group]:
        q = f"SELECT {_GROUP_COLS} FROM groups WHERE state = 'collecting'"
        args: tuple[float, ...] = ()
        if obs_before_ts is not None:
            q += " AND max_ts <= %s"
            args = (obs_before_ts,)
        q += " ORDER BY min_ts"
        if self.c.in_transaction and not self.readonly:
            # a writer acts on what it reads (expiry: collecting -> incomplete): lock the
            # rows, so that of two nodes expiring one group the second, once the first
            # committed, no longer sees it collecting, and a group completed meanwhile is
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
                    f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE group_id = %s "
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
