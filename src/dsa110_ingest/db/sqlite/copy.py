"""Whole-table copies of a SQLite store (``migrate --to``): keyset export, lookup by key,
insert-if-absent with the keys and ids as they are.

The tables, their record classes and keys come from ``records.INDEX_COPY_TABLES`` /
``PRODUCTS_COPY_TABLES``; every statement is built from the record's fields, so a new
column needs nothing here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import astuple
from typing import Any

from dsa110_ingest.db.records import Event, field_names

# well under SQLite's limit of host parameters in one statement
_CHUNK = 500


def _spec(tables: Mapping[str, tuple[type, str]], table: str) -> tuple[type, str, tuple[str, ...]]:
    if table not in tables:
        raise ValueError(f"{table!r} is not a copyable table; one of {sorted(tables)}")
    cls, key = tables[table]
    return cls, key, field_names(cls)


def _record(cls: type, row: Sequence[Any]) -> Any:
    if cls is Event:
        return Event(row[0], row[1], row[2], json.loads(row[3] or "{}"), row[4])
    return cls(*row)


def _values(rec: Any) -> tuple[Any, ...]:
    if isinstance(rec, Event):
        return (rec.id, rec.type, rec.group_id, json.dumps(rec.payload, sort_keys=True),
                rec.created_at)  # fmt: skip
    return astuple(rec)


def export_rows(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    after: Any,
    limit: int,
) -> list[Any]:
    cls, key, cols = _spec(tables, table)
    q = f"SELECT {', '.join(cols)} FROM {table}"
    args: tuple[Any, ...] = ()
    if after is not None:
        q += f" WHERE {key} > ?"
        args = (after,)
    rows = conn.execute(f"{q} ORDER BY {key} LIMIT ?", (*args, limit))
    return [_record(cls, r) for r in rows]


def rows_by_key(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    keys: Sequence[Any],
) -> dict[Any, Any]:
    cls, key, cols = _spec(tables, table)
    at = cols.index(key)
    out: dict[Any, Any] = {}
    keys = list(keys)
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        rows = conn.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {key} IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for r in rows:
            out[r[at]] = _record(cls, r)
    return out


def import_rows(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    rows: Sequence[Any],
) -> int:
    _cls, key, cols = _spec(tables, table)
    # AUTOINCREMENT (events) moves its counter past an explicit id by itself
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT({key}) DO NOTHING"
    )
    n = 0
    for rec in rows:
        n += conn.execute(sql, _values(rec)).rowcount
    return n
