"""Whole-table copies of a SQLite store (``migrate --to``): keyset export, lookup by key,
insert-if-absent with the keys and ids as they are.

The tables, their record classes and keys come from ``records.INDEX_COPY_TABLES`` /
``PRODUCTS_COPY_TABLES``; every statement is built from the record's fields, so a new
column needs nothing here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dsa110_ingest.db.records import copy_record, copy_spec, copy_values
from dsa110_ingest.db.sqlite.connection import translate

# well under SQLite's limit of host parameters in one statement
_CHUNK = 500


@contextmanager
def _errors(conn: sqlite3.Connection, doing: str) -> Iterator[None]:
    """sqlite3's errors as the project's (a file of an older schema lacks a column)."""
    try:
        yield
    except sqlite3.Error as e:
        where = next((r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"), "")
        raise translate(e, where, doing) from None


def export_rows(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    after: Any,
    limit: int,
) -> list[Any]:
    cls, key, cols = copy_spec(tables, table)
    q = f"SELECT {', '.join(cols)} FROM {table}"
    args: tuple[Any, ...] = ()
    if after is not None:
        q += f" WHERE {key} > ?"
        args = (after,)
    with _errors(conn, f"reading {table}"):
        rows = conn.execute(f"{q} ORDER BY {key} LIMIT ?", (*args, limit)).fetchall()
    return [copy_record(cls, r) for r in rows]


def rows_by_key(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    keys: Sequence[Any],
) -> dict[Any, Any]:
    cls, key, cols = copy_spec(tables, table)
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
            out[r[at]] = copy_record(cls, r)
    return out


def import_rows(
    conn: sqlite3.Connection,
    tables: Mapping[str, tuple[type, str]],
    table: str,
    rows: Sequence[Any],
) -> int:
    _cls, key, cols = copy_spec(tables, table)
    # AUTOINCREMENT (events) moves its counter past an explicit id by itself
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT({key}) DO NOTHING"
    )
    n = 0
    with _errors(conn, f"copying rows into {table}"):
        for rec in rows:
            n += conn.execute(sql, copy_values(rec)).rowcount
    return n
