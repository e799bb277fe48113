"""Whole-table copies of a PostgreSQL store (``migrate --to``): keyset export, lookup by
key, insert-if-absent with the keys and ids as they are.

The tables, their record classes and keys come from ``records.INDEX_COPY_TABLES`` /
``PRODUCTS_COPY_TABLES`` (passed in); every statement is built from the record's fields,
so a new column needs nothing here. Table and column names are never user input: they
come from those constants only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.schema import LOCK_EVENTS
from dsa110_ingest.db.records import copy_record, copy_spec, copy_values

# tables whose key is an identity column: its sequence must end past every copied id
_IDENTITY = ("events", "storage_locations")


def export_rows(
    c: PgConnection, tables: Mapping[str, tuple[type, str]], table: str, after: Any, limit: int
) -> list[Any]:
    cls, key, cols = copy_spec(tables, table)
    q = f"SELECT {', '.join(cols)} FROM {table}"
    args: tuple[Any, ...] = ()
    if after is not None:
        q += f" WHERE {key} > %s"
        args = (after,)
    return [copy_record(cls, r) for r in c.all(f"{q} ORDER BY {key} LIMIT %s", (*args, limit))]


def rows_by_key(
    c: PgConnection, tables: Mapping[str, tuple[type, str]], table: str, keys: Sequence[Any]
) -> dict[Any, Any]:
    cls, key, cols = copy_spec(tables, table)
    at = cols.index(key)
    if not keys:
        return {}
    rows = c.all(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} = ANY(%s)", (list(keys),))
    return {r[at]: copy_record(cls, r) for r in rows}


def import_rows(
    c: PgConnection, tables: Mapping[str, tuple[type, str]], table: str, rows: Sequence[Any]
) -> int:
    _cls, key, cols = copy_spec(tables, table)
    if not rows:
        return 0
    if table == "events":
        c.x("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_EVENTS,))  # ids in commit order
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
        f"ON CONFLICT ({key}) DO NOTHING"
    )
    inserted = c.executemany(sql, [copy_values(r) for r in rows], f"copying rows into {table}")
    if table in _IDENTITY:
        # an explicit id does not move the identity's sequence: move it past the copy
        top = max(int(getattr(r, key)) for r in rows)
        c.x(
            "SELECT setval(pg_get_serial_sequence(%(t)s, 'id'), %(top)s, true) WHERE %(top)s > "
            "COALESCE(pg_sequence_last_value(pg_get_serial_sequence(%(t)s, 'id')::regclass), 0)",
            {"t": table, "top": top},
        )
    return inserted
