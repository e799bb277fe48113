"""The PostgreSQL index's conversion jobs, claimed with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import uuid
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.records import JOB_COLUMNS, ConversionJob
from dsa110_ingest.db.store.jobs import JobStore

_JOB_COLS = ", ".join(JOB_COLUMNS)
_CLAIMABLE = (
    "((state = 'pending' AND next_attempt_at <= %(now)s) "
    "OR (state = 'running' AND lease_expires_at < %(now)s AND attempts < %(max)s))"
)


class PgJobs(JobStore):
    """The jobs family of :class:`~dsa110_ingest.db.postgres.index.PostgresIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    c: PgConnection

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
        self, owner: str, now: float, lease_s: float, newest_first: bool, max_attempts: int = 0
    ) -> ConversionJob | None:
        # SQLite's order, NULLs included: first when ascending, last when descending
        order = "DESC NULLS LAST" if newest_first else "ASC NULLS FIRST"
        by = f"ORDER BY obs_mjd {order}, group_id {order.split()[0]}"
        args = {
            "now": now,
            "owner": owner,
            "until": now + lease_s,
            "token": uuid.uuid4().hex,
            "max": max_attempts if max_attempts > 0 else 2**31 - 1,
        }
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

    def lapsed_jobs(self, now: float, max_attempts: int) -> list[ConversionJob]:
        rows = self.c.all(
            f"SELECT {_JOB_COLS} FROM conversion_jobs WHERE state = 'running' AND "
            "lease_expires_at < %s AND attempts >= %s ORDER BY group_id",
            (now, max_attempts),
        )
        return [ConversionJob(*r) for r in rows]

    def fail_lapsed_job(self, group_id: str, token: str, now: float, error: str) -> bool:
        # READ COMMITTED: a concurrent claimer's update is waited for and the WHERE
        # evaluated again on its result, so of two nodes failing it at once one writes
        return (
            self.c.count(
                "UPDATE conversion_jobs SET state = 'failed', last_error = %s, "
                "lease_owner = NULL, lease_expires_at = NULL, finished_at = %s, "
                "updated_at = %s WHERE group_id = %s AND state = 'running' AND "
                "attempt_token IS NOT DISTINCT FROM %s AND lease_expires_at < %s",
                (error, now, now, group_id, token or None, now),
            )
            == 1
        )

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

    def flag_job(self, group_id: str, note: str, now: float) -> None:
        self.c.x(
            "UPDATE conversion_jobs SET last_error = %s, updated_at = %s WHERE group_id = %s",
            (note, now, group_id),
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
