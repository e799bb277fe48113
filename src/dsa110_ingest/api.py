"""The public functions the seed document promised (``hdf5_index.py``'s successors).

They take an explicit DB path; ``None`` means the configured default (config file named
by ``DSA110_INGEST_CONFIG``, ``HDF5_DB_PATH``/``PRODUCTS_DB_PATH``, else the state dir).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from dsa110_ingest.config import Config, StorageLocation, load_config
from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.db.records import SubbandGroup
from dsa110_ingest.errors import InputFolderError
from dsa110_ingest.ingest.indexer import BatchResult, Indexer
from dsa110_ingest.times import iso_to_unix, unix_to_mjd

PathLike = str | os.PathLike[str]
TimeLike = str | datetime | float


def get_hdf5_db_path(config: Config | None = None) -> Path:
    return (config or load_config()).hdf5_db


def get_products_db_path(config: Config | None = None) -> Path:
    return (config or load_config()).products_db


def ensure_hdf5_db(path: PathLike | None = None) -> Any:
    """Create or open the HDF5 DB, migrated to the current schema; returns its DB-API
    connection (``sqlite3.Connection`` for a file), the caller closes it."""
    db = open_index_at(path if path is not None else get_hdf5_db_path())
    return db.dbapi_connection()


def ensure_products_db(path: PathLike | None = None) -> Any:
    """Create or open the products DB (``ms_index``), migrated to the current schema;
    returns its DB-API connection, the caller closes it."""
    db = open_products_at(path if path is not None else get_products_db_path())
    return db.dbapi_connection()


def index_hdf5_files(
    directory: PathLike,
    hdf5_db: PathLike | None = None,
    *,
    config: Config | None = None,
    recursive: bool = False,
) -> BatchResult:
    """Index one directory (as an ``adhoc`` storage location) into the HDF5 DB."""
    cfg = config or load_config()
    d = Path(directory).expanduser().absolute()
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "does not exist"
        raise InputFolderError(f"{d} {what}; pass the folder that holds the subband files")
    loc = next((x for x in cfg.storage_locations if x.path == d), None) or StorageLocation(
        name=f"adhoc:{d}", path=d, role="adhoc", recursive=recursive
    )
    configured = cfg.storage_locations
    cfg = cfg.with_overrides(storage_locations=(loc,))
    with open_index_at(hdf5_db if hdf5_db is not None else cfg.hdf5_db) as db:
        idx = Indexer(db, cfg)
        try:
            idx.register_locations(within=configured)  # a folder inside one is part of it
            return idx.reconcile()
        finally:
            idx.close()


def to_mjd(t: TimeLike) -> float:
    if isinstance(t, int | float):
        return float(t)
    if isinstance(t, datetime):
        return unix_to_mjd(t.timestamp() if t.tzinfo else iso_to_unix(t.isoformat()))
    return unix_to_mjd(iso_to_unix(t))


def find_subband_groups_from_db(
    hdf5_db: PathLike | None, start: TimeLike, end: TimeLike
) -> list[SubbandGroup]:
    """Groups whose observation overlaps [start, end] (ISO UTC, datetime or MJD),
    oldest first, each with its stored member files ordered by subband."""
    path = hdf5_db if hdf5_db is not None else get_hdf5_db_path()
    with open_index_at(path, readonly=True) as db:
        rows = db.groups_overlapping(to_mjd(start), to_mjd(end))
        files = db.files_of_groups([r.group_id for r in rows])
        return [
            SubbandGroup(
                group_id=r.group_id,
                state=r.state,
                n_subbands=r.n_subbands,
                expected_subbands=r.expected_subbands,
                start_mjd=r.start_mjd,
                end_mjd=r.end_mjd,
                files=tuple(f.path for f in files[r.group_id] if not f.missing),
                subbands=tuple(f.subband_num for f in files[r.group_id]),
            )
            for r in rows
        ]


def get_group_count(hdf5_db: PathLike | None, group_id: str) -> int:
    """Number of distinct subbands indexed for a group (0 for an unknown group)."""
    path = hdf5_db if hdf5_db is not None else get_hdf5_db_path()
    with open_index_at(path, readonly=True) as db:
        row = db.group(group_id)
        return int(row.n_subbands) if row else 0


def is_group_complete(hdf5_db: PathLike | None, group_id: str) -> bool:
    path = hdf5_db if hdf5_db is not None else get_hdf5_db_path()
    with open_index_at(path, readonly=True) as db:
        row = db.group(group_id)
        return bool(row and row.n_subbands >= row.expected_subbands)
