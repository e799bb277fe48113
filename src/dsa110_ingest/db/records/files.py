"""File-index rows: indexed files, what the scan knows of them, locations, rejections.

Adding a column to the file index: one line in :data:`FILE_COLUMNS`, one field in
:class:`FileRecord` (the test ``test_file_columns_match_record`` keeps them equal), and
one migration per backend.
"""

from __future__ import annotations

from dataclasses import dataclass

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
