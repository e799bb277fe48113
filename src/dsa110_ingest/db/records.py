"""The rows the stores hand out: frozen dataclasses, the same for every backend.

Field names are the column names, so a backend maps a row with ``Record(**row)`` and a
caller reads ``row.group_id``. Nothing here knows SQL or a driver; the pipeline's own
types that the stores traffic in (``GroupSpan``) live here too, so that ``db/`` needs
nothing from the pipeline.

Adding a column to the file index: one line in :data:`FILE_COLUMNS`, one field in
:class:`FileRecord` (the test ``test_file_columns_match_record`` keeps them equal), and
one migration per backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

# -- the file index ----------------------------------------------------------------
FILE_COLUMNS: tuple[str, ...] = (
    "path",
    "filename",
    "group_id",
    "subband_code",
    "subband_num",
    "timestamp_iso",
    "timestamp_mjd",
    "file_size_bytes",
    "modified_time",
    "indexed_at",
    "stored",
    "ra_deg",
    "dec_deg",
    "obs_date",
    "obs_time",
    "start_mjd",
    "end_mjd",
    "mid_mjd",
    "freq_min_hz",
    "freq_max_hz",
    "channel_width_hz",
    "integration_time_s",
    "n_freqs",
    "n_times",
    "n_ants",
    "n_pols",
    "n_blts",
    "telescope_name",
    "storage_location_id",
    "mtime_ns",
    "is_duplicate",
    "legacy_extra",
)
"""Columns of ``hdf5_file_index`` in order. Both backends build their upsert and their
row mapping from this list; the key is ``path``."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One row of ``hdf5_file_index`` (see docs/database.md for each column)."""

    path: str
    filename: str
    group_id: str | None
    subband_code: str | None
    subband_num: int | None
    timestamp_iso: str | None
    timestamp_mjd: float | None
    file_size_bytes: int | None
    modified_time: float | None
    indexed_at: float | None
    stored: int
    ra_deg: float | None
    dec_deg: float | None
    obs_date: str | None
    obs_time: str | None
    start_mjd: float | None
    end_mjd: float | None
    mid_mjd: float | None
    freq_min_hz: float | None
    freq_max_hz: float | None
    channel_width_hz: float | None
    integration_time_s: float | None
    n_freqs: int | None
    n_times: int | None
    n_ants: int | None
    n_pols: int | None
    n_blts: int | None
    telescope_name: str | None
    storage_location_id: int | None
    mtime_ns: int | None
    is_duplicate: int
    legacy_extra: str | None

    # The pipeline's words for two columns of the public schema, mapped here once: a file
    # no longer on disk is *missing* (``stored`` = 0); a file that claims a subband
    # another file of its group holds is in *conflict* (``is_duplicate`` = 1).
    @property
    def missing(self) -> bool:
        return not self.stored

    @property
    def conflict(self) -> bool:
        return bool(self.is_duplicate)


@dataclass(frozen=True, slots=True)
class KnownFile:
    """What the scan's fast path needs to skip an unchanged file."""

    size: int | None
    mtime_ns: int | None
    stored: int

    @property
    def missing(self) -> bool:
        return not self.stored


@dataclass(frozen=True, slots=True)
class MemberFile:
    """A group's member file, as :meth:`IndexStore.files_of_groups` lists them."""

    group_id: str
    path: str
    subband_num: int | None
    stored: int

    @property
    def missing(self) -> bool:
        return not self.stored


# -- storage locations, rejected files ---------------------------------------------
@dataclass(frozen=True, slots=True)
class Location:
    """One ``storage_locations`` row. ``node`` is the ingest node watching it ('' on a
    single-node index)."""

    id: int
    name: str
    path: str
    role: str
    description: str | None
    node: str = ""


@dataclass(frozen=True, slots=True)
class RejectedFile:
    """A file that could not be indexed, and why (one row per path)."""

    path: str
    reason: str
    detail: str
    file_size_bytes: int | None
    mtime_ns: int | None
    first_seen_at: float
    last_seen_at: float
    attempts: int
    storage_location_id: int | None
    path_bytes: bytes | None


# -- groups --------------------------------------------------------------------------
GROUP_COLUMNS: tuple[str, ...] = (
    "group_id",
    "state",
    "n_subbands",
    "expected_subbands",
    "n_conflicts",
    "min_ts",
    "max_ts",
    "start_mjd",
    "end_mjd",
    "first_seen_at",
    "last_seen_at",
    "completed_at",
    "incomplete_at",
    "deadline_at",
)


@dataclass(frozen=True, slots=True)
class GroupSpan:
    """A group's name-time span, all that clustering needs to place a file."""

    group_id: str
    min_ts: float
    max_ts: float
    state: str

    @property
    def is_collecting(self) -> bool:
        """Still ``collecting``: it may merge with a neighbour or be renamed."""
        return self.state == "collecting"

    def distance(self, ts: float) -> float:
        if self.min_ts <= ts <= self.max_ts:
            return 0.0
        return min(abs(ts - self.min_ts), abs(ts - self.max_ts))


@dataclass(frozen=True)
class Group:
    """One ``groups`` row (an observation): state, counts, spans, deadlines."""

    group_id: str
    state: str
    n_subbands: int
    expected_subbands: int
    n_conflicts: int
    min_ts: float
    max_ts: float
    start_mjd: float | None
    end_mjd: float | None
    first_seen_at: float
    last_seen_at: float
    completed_at: float | None
    incomplete_at: float | None
    deadline_at: float


@dataclass(frozen=True)
class GroupSummary(Group):
    """A group with its conversion job's state (None fields: no job), for listings."""

    convert_state: str | None = None
    attempts: int | None = None
    last_error: str | None = None
    ms_path: str | None = None
    next_attempt_at: float | None = None


@dataclass(frozen=True)
class SubbandGroup:
    """One observation as returned by ``find_subband_groups_from_db``."""

    group_id: str
    state: str
    n_subbands: int
    expected_subbands: int
    start_mjd: float | None
    end_mjd: float | None
    files: tuple[str, ...]  # member files on disk, ordered by subband number
    subbands: tuple[int, ...]

    @property
    def is_complete(self) -> bool:
        return self.n_subbands >= self.expected_subbands

    @property
    def missing_subbands(self) -> tuple[int, ...]:
        have = set(self.subbands)
        return tuple(i for i in range(self.expected_subbands) if i not in have)


# -- events, conversion jobs, heartbeats ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """One outbox event; ``payload`` is the decoded JSON object."""

    id: int
    type: str
    group_id: str | None
    payload: dict[str, Any]
    created_at: float


JOB_COLUMNS: tuple[str, ...] = (
    "group_id",
    "state",
    "obs_mjd",
    "partial",
    "attempts",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "ms_path",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "attempt_token",
)


@dataclass(frozen=True, slots=True)
class ConversionJob:
    """One ``conversion_jobs`` row: a group's conversion, its lease and outcome."""

    group_id: str
    state: str
    obs_mjd: float | None
    partial: int
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    last_error: str | None
    ms_path: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    attempt_token: str | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A daemon's last sign of life, one per node; ``status`` is the decoded JSON."""

    node: str
    pid: int | None
    hostname: str | None
    started_at: float | None
    updated_at: float | None
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """Rows by state: ``files`` (indexed/missing/conflict/rejected), ``groups``,
    ``conversions`` (jobs) and ``events`` (by type)."""

    files: dict[str, int]
    groups: dict[str, int]
    conversions: dict[str, int]
    events: dict[str, int]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "files": self.files,
            "groups": self.groups,
            "conversions": self.conversions,
            "events": self.events,
        }


# -- products ---------------------------------------------------------------------------
MS_COLUMNS: tuple[str, ...] = (
    "path",
    "start_mjd",
    "end_mjd",
    "mid_mjd",
    "processed_at",
    "status",
    "stage",
    "stage_updated_at",
    "cal_applied",
    "imagename",
    "ra_deg",
    "dec_deg",
    "group_id",
    "n_subbands",
    "missing_subbands",
    "n_channels",
    "freq_min_hz",
    "freq_max_hz",
)
"""Columns of ``ms_index`` in order; the key is ``path``."""


@dataclass(frozen=True, slots=True)
class MsRecord:
    """One ``ms_index`` row: a Measurement Set and what it holds."""

    path: str
    start_mjd: float | None
    end_mjd: float | None
    mid_mjd: float | None
    processed_at: float | None
    status: str | None
    stage: str | None
    stage_updated_at: float | None
    cal_applied: int | None
    imagename: str | None
    ra_deg: float | None
    dec_deg: float | None
    group_id: str | None
    n_subbands: int | None
    missing_subbands: str | None
    n_channels: int | None
    freq_min_hz: float | None
    freq_max_hz: float | None


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of a record class in order (what a backend selects for it)."""
    return tuple(f.name for f in fields(cls))


# -- copying a whole store (``migrate --to``) --------------------------------------------
@dataclass(frozen=True, slots=True)
class MetaEntry:
    """One ``meta`` row: a note the index keeps about itself (longest group span, ...)."""

    key: str
    value: str | None


INDEX_COPY_TABLES: dict[str, tuple[type, str]] = {
    "meta": (MetaEntry, "key"),
    "storage_locations": (Location, "id"),
    "groups": (Group, "group_id"),
    "hdf5_file_index": (FileRecord, "path"),
    "rejected_files": (RejectedFile, "path"),
    "events": (Event, "id"),
    "conversion_jobs": (ConversionJob, "group_id"),
}
"""The index tables a copy carries, in an order that satisfies their foreign keys:
table -> (record class, key field). Heartbeats are not copied (they are a node's)."""

PRODUCTS_COPY_TABLES: dict[str, tuple[type, str]] = {"ms_index": (MsRecord, "path")}
"""The products tables a copy carries: table -> (record class, key field)."""


def copy_spec(
    tables: Mapping[str, tuple[type, str]], table: str
) -> tuple[type, str, tuple[str, ...]]:
    """(record class, key field, columns in order) of a copyable table, for a backend's
    ``export_rows`` / ``rows_by_key`` / ``import_rows``."""
    if table not in tables:
        raise ValueError(f"{table!r} is not a copyable table; one of {sorted(tables)}")
    cls, key = tables[table]
    return cls, key, field_names(cls)


def copy_record(cls: type, row: Sequence[Any]) -> Any:
    """A copied table's row (columns as :func:`copy_spec` lists them) as its record."""
    if cls is Event:
        return Event(row[0], row[1], row[2], json.loads(row[3] or "{}"), row[4])
    return cls(*row)


def copy_values(rec: Any) -> tuple[Any, ...]:
    """A record as the column values of its row (the inverse of :func:`copy_record`)."""
    if isinstance(rec, Event):
        payload = json.dumps(rec.payload, sort_keys=True)
        return (rec.id, rec.type, rec.group_id, payload, rec.created_at)
    return astuple(rec)
