"""The SQLite index store: files, storage locations, groups, events, conversion jobs.

Every SQL statement touching the SQLite index is in this package, one module per family
of tables (``files``, ``groups``, ``events``, ``jobs``, ``nodes``, each implementing the
interface of the same name in ``db/store/``); this module composes them into
:class:`SqliteIndexStore` and holds what the families share (connection, transactions,
backups, copying). The schema and its migrations are in ``db/sqlite/schema.py``. Rows
leave as the records of ``db.records``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.records import INDEX_COPY_TABLES
from dsa110_ingest.db.sqlite import copy
from dsa110_ingest.db.sqlite.connection import backup, connect, transaction, translate
from dsa110_ingest.db.sqlite.index.events import EVENT_POLL_S, SqliteEvents
from dsa110_ingest.db.sqlite.index.files import LOCATION_COLS, SqliteFiles
from dsa110_ingest.db.sqlite.index.groups import SqliteGroups
from dsa110_ingest.db.sqlite.index.jobs import SqliteJobs
from dsa110_ingest.db.sqlite.index.nodes import SqliteNodes
from dsa110_ingest.db.sqlite.migrations import migrate, schema_version
from dsa110_ingest.db.sqlite.schema import INDEX_MIGRATIONS
from dsa110_ingest.db.store import IndexStore

__all__ = ["EVENT_POLL_S", "SqliteIndexStore", "open_index_connection"]

# a read-only open does not migrate: `status` of a DB that a not yet restarted older daemon
# still runs reads the columns as they were (node '' / the host name), not an error
_NODE_VERSION = 1 + [m.name for m in INDEX_MIGRATIONS].index("storage_locations.node")
_HEARTBEAT_VERSION = 1 + [m.name for m in INDEX_MIGRATIONS].index("heartbeat per node")


def open_index_connection(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the SQLite index, migrated to the current schema unless readonly."""
    # events are what consumers are promised: synced at their commit, file rows are not
    conn = connect(path, readonly=readonly, durable_tables=("events",))
    if not readonly:
        migrate(conn, path, INDEX_MIGRATIONS)
    return conn


class SqliteIndexStore(
    SqliteFiles, SqliteGroups, SqliteEvents, SqliteJobs, SqliteNodes, IndexStore
):
    """The index in one SQLite file. Not thread-safe: one owner thread per instance."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.readonly = readonly
        self.conn = open_index_connection(self.path, readonly=readonly)
        self._span_cache = None
        version = schema_version(self.conn)
        self._location_cols = (
            LOCATION_COLS
            if version >= _NODE_VERSION
            else LOCATION_COLS.replace(", node", ", '' AS node")
        )
        self._heartbeat_from = (
            "heartbeat"
            if version >= _HEARTBEAT_VERSION
            else "(SELECT COALESCE(hostname, '') AS node, pid, hostname, started_at, "
            "updated_at, status FROM heartbeat)"
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteIndexStore:
        return self

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        # looked up in this module at call time: benchmarks/_traced_daemon.py wraps it
        with transaction(self.conn, self.path, doing):
            yield

    def dbapi_connection(self) -> sqlite3.Connection:
        return self.conn

    def backup_to(self, dest: Path) -> None:
        backup(self.conn, dest)

    def integrity(self) -> str:
        try:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as e:
            raise translate(e, self.path, "checking integrity") from None

    # -- copying the whole index (migrate --to) -------------------------------------
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.conn, INDEX_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.conn, INDEX_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        return copy.import_rows(self.conn, INDEX_COPY_TABLES, table, rows)
