"""Copying a whole store into another backend (``migrate --to``): which tables, keyed
how, and a record as its row's values and back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple, fields
from typing import Any

from dsa110_ingest.db.records.events import Event
from dsa110_ingest.db.records.files import FileRecord, Location, RejectedFile
from dsa110_ingest.db.records.groups import Group
from dsa110_ingest.db.records.jobs import ConversionJob
from dsa110_ingest.db.records.nodes import MetaEntry
from dsa110_ingest.db.records.products import MsRecord


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of a record class in order (what a backend selects for it)."""
    return tuple(f.name for f in fields(cls))


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
