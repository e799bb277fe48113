"""The index store on PostgreSQL: one index shared by several ingest nodes.

Every statement is parameterized; a logical write is one ``transaction()``. One module
per family of tables (``files``, ``groups``, ``events``, ``jobs``, ``nodes``, each
implementing the interface of the same name in ``db/store/``); this module composes them
into :class:`PostgresIndexStore` and holds what they share. What makes several nodes
safe (docs/database.md, "PostgreSQL: several nodes"), each in its family's module:

- clustering of a time window is serialised by advisory locks on its time buckets
  (``groups``: :meth:`PgGroups.lock_time_window`);
- event ids become visible in id order, ``NOTIFY`` is sent in the event's own
  transaction and followers ``LISTEN`` (``events``);
- conversion jobs are claimed with ``FOR UPDATE SKIP LOCKED`` (``jobs``);
- one daemon per node name: a session advisory lock on this store's connection
  (``nodes``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.postgres import copy
from dsa110_ingest.db.postgres.connection import psycopg_module
from dsa110_ingest.db.postgres.index.events import EVENTS_CHANNEL, PgEvents
from dsa110_ingest.db.postgres.index.files import PgFiles
from dsa110_ingest.db.postgres.index.groups import PgGroups, window_buckets
from dsa110_ingest.db.postgres.index.jobs import PgJobs
from dsa110_ingest.db.postgres.index.nodes import IndexConnection, PgNodes
from dsa110_ingest.db.postgres.maintenance import dump_database, integrity_report
from dsa110_ingest.db.postgres.schema import INDEX_MIGRATIONS, INDEX_TABLES
from dsa110_ingest.db.records import INDEX_COPY_TABLES
from dsa110_ingest.db.store import IndexStore

__all__ = ["EVENTS_CHANNEL", "PostgresIndexStore", "window_buckets"]


class PostgresIndexStore(PgFiles, PgGroups, PgEvents, PgJobs, PgNodes, IndexStore):
    """The index in a PostgreSQL database. Not thread-safe: one owner thread per instance."""

    def __init__(self, uri: str, *, readonly: bool = False) -> None:
        self.c = IndexConnection(uri, readonly=readonly)
        self.uri = uri
        self.name = self.c.name
        self.readonly = readonly
        self._pg = psycopg_module()
        self._listener = None
        self._span_cache = None
        self._near = None
        self._files = None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.c.nodes_locked.clear()  # session locks end with the session
        self.c.close()

    def __enter__(self) -> PostgresIndexStore:
        return self

    def dbapi_connection(self) -> Any:
        return self.c.live()

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        self._near, self._files = None, None
        try:
            with self.c.transaction(doing):
                yield
        finally:
            self._near, self._files = None, None

    def backup_to(self, dest: Path) -> None:
        dump_database(self.uri, self.name, dest)

    def integrity(self) -> str:
        return integrity_report(self.c.live(), self.name, INDEX_TABLES, INDEX_MIGRATIONS)

    # -- copying the whole index (``migrate --to``) -----------------------------------------
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.c, INDEX_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.c, INDEX_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        self._files = None  # file rows change
        return copy.import_rows(self.c, INDEX_COPY_TABLES, table, rows)
