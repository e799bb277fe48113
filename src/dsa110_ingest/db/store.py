"""The storage interface: one abstract store per database, implemented per backend.

``IndexStore`` is the input database (files, storage locations, groups, events,
conversion jobs, rejected files, heartbeats); ``ProductsStore`` is the output database
(``ms_index``). Get one with :func:`dsa110_ingest.db.open_index` /
:func:`dsa110_ingest.db.open_products`, never by constructing a backend class.

Conventions every backend keeps:

- Rows are the frozen dataclasses of :mod:`dsa110_ingest.db.records`, never driver rows.
- Writes that belong together run in ``with store.transaction("doing what"):``. Methods
  marked *own transaction* open one themselves and must not be called inside another
  (transactions are not re-entrant); methods marked *inside a transaction* only write
  and leave committing to the caller. Reads may be called anywhere.
- Times are unix seconds (float) unless the name says ``mjd``. Paths are text; a file
  name that is not UTF-8 is stored escaped (``naming.path_text``).
- A store is used by one thread at a time; open one store per thread.
- Errors are :class:`dsa110_ingest.errors.DatabaseError` and its subclasses, with the
  database named in the message.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.records import (
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
    MsRecord,
    RejectedFile,
)


class Store(abc.ABC):
    """What both stores share: a name for messages, closing, transactions, backups."""

    #: the database for messages: a file path, or a URI without its password
    name: str

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection(s). The store is unusable afterwards."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        """Group writes: all of them commit at the end of the block, or none does when
        it raises. ``doing`` names the work in error messages ("indexing 3 file(s)").
        Writers serialise here (SQLite: BEGIN IMMEDIATE), so a transaction never fails
        half way for lack of a lock. Not re-entrant."""
        yield

    @abc.abstractmethod
    def dbapi_connection(self) -> Any:
        """The underlying DB-API connection. Only for the seed document's
        ``ensure_hdf5_db``/``ensure_products_db`` (which promise a connection) and for
        schema checks in tests; the pipeline never touches it."""

    @abc.abstractmethod
    def integrity(self) -> str:
        """``"ok"`` when the backend's own consistency check passes, else its report."""

    @abc.abstractmethod
    def backup_to(self, dest: Path) -> None:
        """A consistent copy of the live database written to ``dest`` (a local file in
        the backend's own dump format; SQLite: a database file)."""

    # -- copying a whole store into another backend (``migrate --to``) ------------------
    # ``table`` is a key of records.INDEX_COPY_TABLES / PRODUCTS_COPY_TABLES; rows are the
    # record class named there, keyed by the field named there.
    @abc.abstractmethod
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        """Rows of ``table`` whose key is greater than ``after`` (None: from the first),
        by key, at most ``limit``: keyset paging through a table of any size."""

    @abc.abstractmethod
    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        """The rows of ``table`` whose key is one of ``keys``, by key (absent: absent)."""

    @abc.abstractmethod
    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        """*Inside a transaction.* Insert the rows with their keys and ids as they are,
        leaving alone every row whose key already exists; returns how many were inserted.
        Id counters (``events.id``, ``storage_locations.id``) end at or above the largest
        id imported, so the next event or location never collides with a copied one."""


class IndexStore(Store):
    """The input database. Method names are those the pipeline calls."""

    # -- storage locations ---------------------------------------------------------
    @abc.abstractmethod
    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        """*Own transaction.* The id of the storage location called ``name`` or at
        ``path`` (a rename or a move keeps the id, preferring the one matching ``name``),
        created when neither exists, its path, role, description and node updated."""

    @abc.abstractmethod
    def locations(self, node: str | None = None) -> list[Location]:
        """Storage locations by id; with ``node``, only those of that node."""

    # -- the file index ---------------------------------------------------------------
    @abc.abstractmethod
    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        """Size, mtime and stored flag of every indexed path under one location."""

    @abc.abstractmethod
    def known_rejected(self) -> dict[str, KnownFile]:
        """Size and mtime of every rejected path (``stored`` is 0)."""

    @abc.abstractmethod
    def get_file(self, path: str) -> FileRecord | None:
        """The file row of ``path`` (escaped like the index does), or None."""

    @abc.abstractmethod
    def files_named(self, filename: str) -> list[FileRecord]:
        """Every file row with this base name (the same file in several places)."""

    @abc.abstractmethod
    def upsert_file(self, row: Mapping[str, Any]) -> None:
        """*Inside a transaction.* Insert or replace the file row keyed by
        ``row["path"]``; keys are :data:`~dsa110_ingest.db.records.FILE_COLUMNS`, a
        missing key is NULL."""

    @abc.abstractmethod
    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        """*Inside a transaction.* Like :meth:`upsert_file` but leaves an existing row
        alone; True when a row was inserted."""

    @abc.abstractmethod
    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        """*Inside a transaction.* The file at ``old`` is now at ``new`` (a rename seen
        by the watcher): its row follows, stored again, and a rejection of ``new`` is
        forgotten."""

    @abc.abstractmethod
    def mark_missing(self, paths: Iterable[str]) -> int:
        """*Inside a transaction.* Set ``stored = 0`` on these paths; returns how many
        rows changed (already-missing ones do not count)."""

    @abc.abstractmethod
    def subband_taken(self, group_id: str, subband: int) -> bool:
        """Whether a non-duplicate member of the group already has this subband."""

    @abc.abstractmethod
    def set_duplicate(self, path: str, dup: int) -> None:
        """*Inside a transaction.* Take a member out of (1) or back into (0) its group's
        subband count."""

    @abc.abstractmethod
    def all_paths(self) -> set[str]:
        """Every indexed path."""

    @abc.abstractmethod
    def stored_paths(self) -> list[str]:
        """Every indexed path still on disk (``stored = 1``)."""

    @abc.abstractmethod
    def path_groups(self) -> dict[str, str | None]:
        """Path -> group id for every indexed file."""

    # -- rejected files -------------------------------------------------------------
    @abc.abstractmethod
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
        """*Inside a transaction.* Record (or refresh, counting attempts) why ``path``
        cannot be indexed; a non-UTF-8 name keeps its exact bytes in ``path_bytes``."""

    @abc.abstractmethod
    def unreject(self, path: str) -> None:
        """*Inside a transaction.* Forget the rejection of ``path`` (it indexed now)."""

    @abc.abstractmethod
    def rejected(self) -> list[RejectedFile]:
        """Rejected files, most recently seen first."""

    # -- groups -------------------------------------------------------------------------
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
        """*Inside a transaction.* Merge open group ``other`` into ``target`` (a bridging
        file): its files move over (those whose subband ``target`` has become
        duplicates), the earlier first-seen time and deadline win, ``other`` is gone."""

    @abc.abstractmethod
    def rename_group(self, old: str, new: str) -> None:
        """*Inside a transaction.* Change an open group's id, its files and job follow."""

    @abc.abstractmethod
    def refresh_group(self, group_id: str, min_ts: float, max_ts: float, now: float) -> Group:
        """*Inside a transaction.* Widen the span to include [min_ts, max_ts], recount
        subbands, conflicts and MJD span from the member files, touch ``last_seen_at``,
        and remember the longest group span (for :meth:`groups_overlapping`). Returns
        the updated row."""

    @abc.abstractmethod
    def set_group_state(self, group_id: str, state: str, now: float) -> None:
        """*Inside a transaction.* Set the state; ``complete``/``incomplete`` also set
        ``completed_at``/``incomplete_at`` the first time."""

    @abc.abstractmethod
    def group(self, group_id: str) -> Group | None:
        """One group, or None."""

    @abc.abstractmethod
    def open_groups(self, obs_before_ts: float | None = None) -> list[Group]:
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
        """A group's files by subband (then duplicates last, then path); with
        ``members_only`` the duplicates are left out."""

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
        """Member (non-duplicate) files of each group by subband; every asked id is a key."""

    # -- events -----------------------------------------------------------------------------
    @abc.abstractmethod
    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        """*Inside a transaction* (the one making the change it reports). Returns the new
        event's id: ids only grow and are never reused."""

    @abc.abstractmethod
    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        """Committed events with id > ``after_id``, by id, at most ``limit``."""

    @abc.abstractmethod
    def wait_for_events(self, after_id: int, timeout: float) -> None:
        """Return when an event newer than ``after_id`` may exist, or after ``timeout``
        seconds (SQLite: sleeps min(timeout, 0.5); PostgreSQL: LISTEN/NOTIFY)."""

    @abc.abstractmethod
    def event_id_high(self) -> int:
        """The largest event id ever handed out (0 for none), deleted events included."""

    @abc.abstractmethod
    def raise_event_id_floor(self, floor: int) -> bool:
        """*Own transaction.* Make the next event id larger than ``floor``; True when the
        counter had to move."""

    @abc.abstractmethod
    def last_activity(self) -> tuple[float, float]:
        """(last file row written, last event) as unix times; 0 when none."""

    @abc.abstractmethod
    def count_events(self, type_: str | None = None) -> int:
        """Number of events, optionally of one type."""

    # -- conversion jobs ------------------------------------------------------------------
    @abc.abstractmethod
    def enqueue_job(
        self, group_id: str, obs_mjd: float | None, now: float, partial: bool = False
    ) -> None:
        """*Inside a transaction.* A pending job for the group unless it has one."""

    @abc.abstractmethod
    def claim_job(
        self, owner: str, now: float, lease_s: float, newest_first: bool
    ) -> ConversionJob | None:
        """*Own transaction.* Take the next claimable job (pending and due, or running
        with an expired lease) by observation time, newest or oldest first: running,
        leased to ``owner`` until ``now + lease_s``, one more attempt, a fresh
        ``attempt_token``. None when there is none. Exactly one claimer wins a job even
        across processes and nodes (PostgreSQL: FOR UPDATE SKIP LOCKED)."""

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

    # -- meta, status, heartbeats, node lock --------------------------------------------
    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """*Inside a transaction.* Store a key/value note (migration markers)."""

    @abc.abstractmethod
    def counts(self) -> IndexCounts:
        """Rows by state for ``status`` (scans the file index: not for a hot path)."""

    @abc.abstractmethod
    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(groups by state, conversion jobs by state); cheap."""

    @abc.abstractmethod
    def write_heartbeat(
        self,
        node: str,
        pid: int,
        hostname: str,
        started_at: float,
        now: float,
        status: dict[str, Any],
    ) -> None:
        """*Own transaction.* Replace ``node``'s heartbeat row."""

    @abc.abstractmethod
    def heartbeat(self, node: str) -> Heartbeat | None:
        """``node``'s last heartbeat, or None."""

    @abc.abstractmethod
    def heartbeats(self) -> list[Heartbeat]:
        """Every node's last heartbeat, by node name."""

    @abc.abstractmethod
    def try_lock_node(self, node: str) -> bool:
        """Claim the right to run the daemon of ``node`` for as long as this store is
        open; False when another live process holds it. SQLite: always True (the
        state-directory lock file does this); PostgreSQL: a session advisory lock."""

    @abc.abstractmethod
    def unlock_node(self, node: str) -> None:
        """Give up what :meth:`try_lock_node` took (closing the store does too)."""


class ProductsStore(Store):
    """The output database: ``ms_index``, one row per Measurement Set."""

    @abc.abstractmethod
    def upsert_ms(self, row: Mapping[str, Any]) -> None:
        """*Own transaction.* Insert or update the MS row keyed by ``row["path"]``; keys
        are :data:`~dsa110_ingest.db.records.MS_COLUMNS`. A None (or missing key) never
        replaces a known value (upstream's rule)."""

    @abc.abstractmethod
    def ms(self, path: str) -> MsRecord | None:
        """The row of one MS, or None."""

    @abc.abstractmethod
    def all_ms(self) -> list[MsRecord]:
        """Every MS row by ``mid_mjd``."""

    @abc.abstractmethod
    def set_status(self, path: str, status: str, now: float) -> None:
        """*Own transaction.* Set an MS row's status and ``stage_updated_at``."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """*Own transaction.* Remove an MS row."""

    @abc.abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether a table of that name exists (the legacy ``hdf5_file_index`` check)."""

    @abc.abstractmethod
    def legacy_columns(self) -> list[str]:
        """Columns of a legacy ``hdf5_file_index`` kept in the products DB by upstream
        (empty when there is none)."""

    @abc.abstractmethod
    def legacy_rows(self) -> list[dict[str, Any]]:
        """The rows of that legacy table, as column -> value."""

    @abc.abstractmethod
    def finish_migration(self, group_ids: dict[str, str], drop_legacy: bool) -> None:
        """*Own transaction.* Fill ``ms_index.group_id`` where unknown (MS path -> group
        id), and drop the legacy table when ``drop_legacy``."""
