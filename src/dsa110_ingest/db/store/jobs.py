"""Conversion jobs: the queue of groups to convert, their leases and outcomes."""

from __future__ import annotations

import abc

from dsa110_ingest.db.records import ConversionJob
from dsa110_ingest.db.store.base import Store


class JobStore(Store):
    """One conversion job per group: queued, claimed under a lease by exactly one
    worker (across nodes), finished, retried."""

    @abc.abstractmethod
    def enqueue_job(
        self, group_id: str, obs_mjd: float | None, now: float, partial: bool = False
    ) -> None:
        """*Inside a transaction.* A pending job for the group unless it has one."""

    @abc.abstractmethod
    def claim_job(
        self, owner: str, now: float, lease_s: float, newest_first: bool, max_attempts: int = 0
    ) -> ConversionJob | None:
        """*Own transaction.* Take the next claimable job (pending and due, or running
        with an expired lease) by observation time, newest or oldest first: running,
        leased to ``owner`` until ``now + lease_s``, one more attempt, a fresh
        ``attempt_token``. None when there is none. Exactly one claimer wins a job even
        across processes and nodes (PostgreSQL: FOR UPDATE SKIP LOCKED). With
        ``max_attempts`` (> 0) a running job with an expired lease is claimed only while
        its attempts are fewer: the others are :meth:`lapsed_jobs`, to be failed."""

    @abc.abstractmethod
    def lapsed_jobs(self, now: float, max_attempts: int) -> list[ConversionJob]:
        """Running jobs whose lease expired before ``now`` with ``max_attempts`` attempts
        (or more) used: each attempt's converter stopped renewing its lease (its daemon
        killed or crashed), and another claim would exceed ``max_attempts``."""

    @abc.abstractmethod
    def fail_lapsed_job(self, group_id: str, token: str, now: float, error: str) -> bool:
        """*Inside a transaction.* A lapsed job (:meth:`lapsed_jobs`) failed with
        ``error``, its lease dropped; False (nothing written) unless it is still running
        as attempt ``token`` with its lease expired at ``now`` (another claimer failed it
        first, or its holder renewed it)."""

    @abc.abstractmethod
    def lease_job(
        self, group_id: str, owner: str, now: float, lease_s: float
    ) -> ConversionJob | None:
        """*Own transaction.* Take the lease of one group's job whatever its state (a
        foreground ``convert``), unless another owner holds a live lease or there is no
        job: then None."""

    @abc.abstractmethod
    def renew_lease(self, group_id: str, owner: str, until: float) -> bool:
        """*Own transaction.* Extend ``owner``'s lease of a running job; False when the
        lease is no longer ``owner``'s."""

    @abc.abstractmethod
    def job(self, group_id: str) -> ConversionJob | None:
        """A group's conversion job, or None."""

    @abc.abstractmethod
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
        """*Inside a transaction.* Set a job's outcome and drop its lease; False (nothing
        written) when ``owner`` no longer holds the lease, or with ``token`` when the
        attempt was given up and another started. ``refund_attempt``: the node, not the
        group, failed; the attempt does not count."""

    @abc.abstractmethod
    def flag_job(self, group_id: str, note: str, now: float) -> None:
        """*Inside a transaction.* Put ``note`` in a job's ``last_error``, its state kept
        (a converted group whose input changed since); the next outcome replaces it."""

    @abc.abstractmethod
    def release_job(self, group_id: str, owner: str, now: float) -> None:
        """*Own transaction.* Give back a job interrupted by our own shutdown: pending
        again, the attempt not counted."""

    @abc.abstractmethod
    def requeue_job(
        self, group_id: str, owner: str, token: str, now: float, error: str, next_attempt_at: float
    ) -> bool:
        """*Inside a transaction.* An attempt lost to the executor: pending again at
        ``next_attempt_at``, not counted; False unless ``owner`` and ``token`` match."""

    @abc.abstractmethod
    def retry_failed_job(self, group_id: str, now: float) -> bool:
        """*Own transaction.* failed -> pending with fresh attempts; False when the job
        is not failed."""

    @abc.abstractmethod
    def troubled_jobs(self, limit: int = 50) -> list[ConversionJob]:
        """Failed jobs and pending ones with an error (waiting for a retry), most
        recently updated first."""

    @abc.abstractmethod
    def jobs_open(self) -> int:
        """Number of pending or running jobs."""

    @abc.abstractmethod
    def record_converted(
        self, group_id: str, ms_path: str, obs_mjd: float | None, now: float
    ) -> None:
        """*Inside a transaction.* A group converted before this project knew it (a
        legacy ``ms_index`` row): its job is ``converted`` with that MS."""
