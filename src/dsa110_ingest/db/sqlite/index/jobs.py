"""The SQLite index's conversion jobs: queue, leases, outcomes."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from dsa110_ingest.db.records import JOB_COLUMNS, ConversionJob
from dsa110_ingest.db.store.jobs import JobStore

_JOB_COLS = ", ".join(JOB_COLUMNS)


def _job(row: Sequence[Any] | None) -> ConversionJob | None:
    return None if row is None else ConversionJob(*row)


class SqliteJobs(JobStore):
    """The jobs family of :class:`~dsa110_ingest.db.sqlite.index.SqliteIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    conn: sqlite3.Connection

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
        "<= :now) OR (state = 'running' AND lease_expires_at < :now AND attempts < :max)) "
    )

    def claim_job(
        self, owner: str, now: float, lease_s: float, newest_first: bool, max_attempts: int = 0
    ) -> ConversionJob | None:
        order = "DESC" if newest_first else "ASC"
        q = self._CLAIMABLE + f"ORDER BY obs_mjd {order}, group_id {order} LIMIT 1"
        args = {"now": now, "max": max_attempts if max_attempts > 0 else 2**62}
        # look without the write lock first: an idle queue must not contend with indexing
        if self.conn.execute(q, args).fetchone() is None:
            return None
        with self.transaction("claiming a conversion"):
            row = _job(self.conn.execute(q, args).fetchone())
            if row is None:
                return None  # another worker took it between the look and the lock
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'running', lease_owner = ?, "
                "lease_expires_at = ?, attempts = attempts + 1, started_at = ?, updated_at = ?, "
                "attempt_token = ? WHERE group_id = ?",
                (owner, now + lease_s, now, now, uuid.uuid4().hex, row.group_id),
            )
            return self.job(row.group_id)

    def lapsed_jobs(self, now: float, max_attempts: int) -> list[ConversionJob]:
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE state = 'running' AND "
            "lease_expires_at < ? AND attempts >= ? ORDER BY group_id",
            (now, max_attempts),
        )
        return [ConversionJob(*r) for r in rows]

    def fail_lapsed_job(self, group_id: str, token: str, now: float, error: str) -> bool:
        return (
            self.conn.execute(
                "UPDATE conversion_jobs SET state = 'failed', last_error = ?, lease_owner = NULL,"
                " lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE group_id = ? "
                "AND state = 'running' AND attempt_token IS ? AND lease_expires_at < ?",
                (error, now, now, group_id, token or None, now),
            ).rowcount
            == 1
        )

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

    def flag_job(self, group_id: str, note: str, now: float) -> None:
        self.conn.execute(
            "UPDATE conversion_jobs SET last_error = ?, updated_at = ? WHERE group_id = ?",
            (note, now, group_id),
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
