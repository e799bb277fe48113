"""Groups: clustering files into observations, their state and their files."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from dsa110_ingest.db.records import FileRecord, Group, GroupSpan, GroupSummary, MemberFile
from dsa110_ingest.db.store.base import Store


class GroupStore(Store):
    """Observations: the clustering of files by name time (under a lock of the time
    window), a group's state (``collecting`` -> ``complete``/``incomplete``) and its
    member files; two files claiming one subband are a *conflict*."""

    @abc.abstractmethod
    def lock_time_window(self, ts: float, tolerance: float) -> None:
        """*Inside a transaction*, before :meth:`groups_near`: serialise clustering of
        files whose name time is within ``tolerance`` of ``ts`` with every other writer
        until the transaction ends, so that two writers never create two groups for one
        observation. SQLite: nothing to do (BEGIN IMMEDIATE already serialises writers)."""

    @abc.abstractmethod
    def groups_near(self, ts: float, tolerance: float) -> list[GroupSpan]:
        """Groups whose span [min_ts, max_ts] comes within ``tolerance`` of ``ts``."""

    @abc.abstractmethod
    def create_group(
        self, group_id: str, ts: float, expected: int, now: float, deadline: float
    ) -> None:
        """*Inside a transaction.* A new collecting group spanning just ``ts``."""

    @abc.abstractmethod
    def absorb_group(self, target: str, other: str) -> None:
        """*Inside a transaction.* Merge collecting group ``other`` into ``target`` (a bridging
        file): its files move over (those whose subband ``target`` has become
        conflicts), the earlier first-seen time and deadline win, ``other`` is gone."""

    @abc.abstractmethod
    def rename_group(self, old: str, new: str) -> None:
        """*Inside a transaction.* Change a collecting group's id, its files and job follow."""

    @abc.abstractmethod
    def subband_taken(self, group_id: str, subband: int) -> bool:
        """Whether a member not in conflict of the group already has this subband."""

    @abc.abstractmethod
    def refresh_group(
        self, group_id: str, min_ts: float, max_ts: float, now: float, *, history: bool = False
    ) -> Group:
        """*Inside a transaction.* Widen the span to include [min_ts, max_ts], recount
        subbands (members on disk; with ``history``, every member ever indexed: how a
        migrated legacy observation was seen), conflicts and MJD span from the member
        files, touch ``last_seen_at``, and remember the longest group span (for
        :meth:`groups_overlapping`). Returns the updated row."""

    @abc.abstractmethod
    def set_group_state(self, group_id: str, state: str, now: float) -> None:
        """*Inside a transaction.* Set the state; ``complete``/``incomplete`` also set
        ``completed_at``/``incomplete_at`` the first time."""

    @abc.abstractmethod
    def group(self, group_id: str) -> Group | None:
        """One group, or None."""

    @abc.abstractmethod
    def collecting_groups(self, obs_before_ts: float | None = None) -> list[Group]:
        """Groups still collecting, oldest first; with ``obs_before_ts`` only those whose
        ``max_ts`` is at or before it."""

    @abc.abstractmethod
    def partial_candidates(
        self, older_than: float, min_subbands: int, obs_before_ts: float | None = None
    ) -> list[Group]:
        """Incomplete groups to convert anyway: first seen at or before ``older_than``
        (or observed at or before ``obs_before_ts``), with at least ``min_subbands``,
        and no conversion job yet. Oldest first."""

    @abc.abstractmethod
    def group_files(self, group_id: str, *, members_only: bool = True) -> list[FileRecord]:
        """A group's files by subband (then conflicts last, then path); with
        ``members_only`` the conflicts are left out."""

    @abc.abstractmethod
    def groups_overlapping(
        self, start_mjd: float, end_mjd: float, state: str | None = None
    ) -> list[Group]:
        """Groups whose [start_mjd, end_mjd] overlaps the given MJD range, optionally of
        one state, by start. Must be an index range scan (bounded by the longest group
        span recorded by :meth:`refresh_group`), not a table scan."""

    @abc.abstractmethod
    def list_groups(
        self,
        since_ts: float | None,
        until_ts: float | None,
        state: str | None,
        limit: int | None = None,
    ) -> list[GroupSummary]:
        """Groups overlapping [since_ts, until_ts] (unix, either open-ended) with their
        job's state; ``state`` matches the group's or the job's state. By ``min_ts``."""

    @abc.abstractmethod
    def files_of_groups(self, group_ids: Sequence[str]) -> dict[str, list[MemberFile]]:
        """Member files (not in conflict) of each group by subband; every asked id is a key."""
