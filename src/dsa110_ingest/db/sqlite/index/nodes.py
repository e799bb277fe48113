"""The SQLite index's notes, counts, heartbeats and (trivial) node lock."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from dsa110_ingest.db.records import INDEX_ID_KEY, Heartbeat, IndexCounts
from dsa110_ingest.db.sqlite.schema import add_index_id
from dsa110_ingest.db.store.nodes import NodeStore

_HEARTBEAT_COLS = "node, pid, hostname, started_at, updated_at, status"


def _heartbeat(row: Sequence[Any]) -> Heartbeat:
    return Heartbeat(*row[:5], status=json.loads(row[5] or "{}"))


class SqliteNodes(NodeStore):
    """The nodes family of :class:`~dsa110_ingest.db.sqlite.index.SqliteIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    conn: sqlite3.Connection
    _heartbeat_from: str
    readonly: bool

    def index_id(self) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_ID_KEY,)).fetchone()
        if row is not None or self.readonly:
            return None if row is None else str(row[0])
        with self.transaction("giving the index its identity"):
            add_index_id(self.conn)
        return self.index_id()

    def adopt_index_id(self, index_id: str) -> None:
        with self.transaction("taking over the copied index's identity"):
            self.set_meta(INDEX_ID_KEY, index_id)

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def counts(self) -> IndexCounts:
        c = self.conn
        files = dict(
            c.execute(
                "SELECT CASE WHEN stored = 0 THEN 'missing' WHEN is_duplicate = 1 THEN 'conflict' "
                "ELSE 'indexed' END AS s, COUNT(*) FROM hdf5_file_index GROUP BY s"
            ).fetchall()
        )
        files["rejected"] = c.execute("SELECT COUNT(*) FROM rejected_files").fetchone()[0]
        groups, jobs = self.state_counts()
        events = dict(c.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        return IndexCounts(files=files, groups=groups, conversions=jobs, events=events)

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Groups and conversion jobs by state (cheap: not a scan of the file rows)."""
        c = self.conn
        groups = dict(c.execute("SELECT state, COUNT(*) FROM groups GROUP BY state").fetchall())
        jobs = dict(
            c.execute("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state").fetchall()
        )
        return groups, jobs

    def write_heartbeat(
        self,
        node: str,
        pid: int,
        hostname: str,
        started_at: float,
        now: float,
        status: dict[str, Any],
    ) -> None:
        with self.transaction("writing the heartbeat"):
            self.conn.execute(
                f"INSERT INTO heartbeat ({_HEARTBEAT_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(node) DO UPDATE SET pid = excluded.pid, hostname = "
                "excluded.hostname, started_at = excluded.started_at, updated_at = "
                "excluded.updated_at, status = excluded.status",
                (node, pid, hostname, started_at, now, json.dumps(status, sort_keys=True)),
            )

    def heartbeat(self, node: str) -> Heartbeat | None:
        row = self.conn.execute(
            f"SELECT {_HEARTBEAT_COLS} FROM {self._heartbeat_from} WHERE node = ?", (node,)
        ).fetchone()
        return None if row is None else _heartbeat(row)

    def heartbeats(self) -> list[Heartbeat]:
        rows = self.conn.execute(
            f"SELECT {_HEARTBEAT_COLS} FROM {self._heartbeat_from} ORDER BY node"
        )
        return [_heartbeat(r) for r in rows]

    def try_lock_node(self, node: str) -> bool:
        """The state directory's lock file (runtime.StateLock) already allows one daemon
        per SQLite index, and a SQLite index has one node."""
        return True

    def unlock_node(self, node: str) -> None:
        return None
