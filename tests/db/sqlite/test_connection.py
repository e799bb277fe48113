"""Durability of the SQLite connections: events synced at their commit, file rows not.

The count of ``os.fdatasync`` calls is this module's own syncs of the WAL (SQLite's own
syncs are made in C and never pass through Python): one per transaction that wrote an
event, none for one that wrote only file rows or heartbeats.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.db.sqlite.connection import Connection, connect, transaction


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    yield calls


def _level(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_the_index_commits_at_normal_and_the_products_db_at_full(tmp_path: Path) -> None:
    index = open_index_at(tmp_path / "h.sqlite3")
    products = open_products_at(tmp_path / "p.sqlite3")
    try:
        assert _level(index.dbapi_connection()) == 1  # NORMAL: events synced by us
        assert _level(products.dbapi_connection()) == 2  # FULL: every commit
    finally:
        index.close()
        products.close()


def test_only_a_transaction_that_writes_an_event_is_synced(
    tmp_path: Path, syncs: list[int]
) -> None:
    # the events table appears only with the migrations, after the connection opened
    store = open_index_at(tmp_path / "h.sqlite3")
    try:
        syncs.clear()
        store.write_heartbeat("n", 1, "host", 0.0, 1.0, {})  # its own transaction
        assert syncs == []
        with store.transaction("an event"):
            store.add_event("group.complete", "g", {}, 1.0)
        assert len(syncs) == 1
        with pytest.raises(RuntimeError), store.transaction("an event rolled back"):
            store.add_event("group.complete", "g2", {}, 1.0)
            raise RuntimeError("the body failed")
        assert len(syncs) == 1
        store.write_heartbeat("n", 1, "host", 0.0, 2.0, {})
        assert len(syncs) == 1
        assert [e.group_id for e in store.events_after(0)] == ["g"]
    finally:
        store.close()


def test_a_rebuilt_table_is_armed_again(tmp_path: Path, syncs: list[int]) -> None:
    # a migration that rebuilds a durable table drops its triggers with it
    path = tmp_path / "x.sqlite3"
    conn = connect(path, durable_tables=("events",))
    assert isinstance(conn, Connection)
    try:
        with transaction(conn, path, "creating"):
            conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, v TEXT)")
        with transaction(conn, path, "writing"):
            conn.execute("INSERT INTO events (v) VALUES ('a')")
        assert len(syncs) == 1
        with transaction(conn, path, "rebuilding"):
            conn.execute("CREATE TABLE events_new (id INTEGER PRIMARY KEY, v TEXT, w TEXT)")
            conn.execute("INSERT INTO events_new (id, v) SELECT id, v FROM events")
            conn.execute("DROP TABLE events")
            conn.execute("ALTER TABLE events_new RENAME TO events")
        assert len(syncs) == 1  # the copy into the new table is not an event write...
        with transaction(conn, path, "writing again"):
            conn.execute("INSERT INTO events (v) VALUES ('b')")
        assert len(syncs) == 2  # ...but this one is, on the rebuilt table
        with transaction(conn, path, "a row elsewhere"):
            conn.execute("CREATE TABLE IF NOT EXISTS other (x)")
            conn.execute("INSERT INTO other VALUES (1)")
        assert len(syncs) == 2
    finally:
        conn.close()


def test_a_connection_without_durable_tables_never_syncs_itself(
    tmp_path: Path, syncs: list[int]
) -> None:
    path = tmp_path / "y.sqlite3"
    conn = connect(path)
    try:
        assert _level(conn) == 2
        with transaction(conn, path, "writing"):
            conn.execute("CREATE TABLE events (v)")
            conn.execute("INSERT INTO events VALUES (1)")
        assert syncs == []  # FULL: SQLite synced the commit itself
    finally:
        conn.close()
