"""The PostgreSQL index's notes, counts, heartbeats and node lock.

One daemon per node name: a session advisory lock on the store's connection, taken
again when the connection is opened again (:class:`IndexConnection`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.schema import INDEX_MIGRATIONS, LOCK_NODE, add_index_id
from dsa110_ingest.db.records import INDEX_ID_KEY, Heartbeat, IndexCounts
from dsa110_ingest.db.store.nodes import NodeStore
from dsa110_ingest.errors import DatabaseError

_HEARTBEAT_COLS = "node, pid, hostname, started_at, updated_at, status"


def _heartbeat(row: Sequence[Any]) -> Heartbeat:
    return Heartbeat(*row[:5], status=json.loads(row[5] or "{}"))


class IndexConnection(PgConnection):
    """The index store's connection: it also holds the node locks taken on it."""

    def __init__(self, uri: str, *, readonly: bool) -> None:
        self.nodes_locked: set[str] = set()
        super().__init__(uri, "index", INDEX_MIGRATIONS, readonly=readonly)

    def lock_node(self, node: str) -> bool:
        return bool(self.value("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_NODE, node)))

    def reconnected(self) -> None:
        # a node's lock lived in the lost session: take it again or stop claiming the node
        for node in sorted(self.nodes_locked):
            if not self.lock_node(node):
                self.nodes_locked.discard(node)
                raise DatabaseError(
                    f"lost the connection to {self.name} and with it the lock of node "
                    f"{node!r}, which another daemon took meanwhile; two daemons are "
                    "configured with that node name: give each its own"
                )


class PgNodes(NodeStore):
    """The nodes family of :class:`~dsa110_ingest.db.postgres.index.PostgresIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    c: IndexConnection
    readonly: bool

    def index_id(self) -> str | None:
        value = self.c.value("SELECT value FROM meta WHERE key = %s", (INDEX_ID_KEY,))
        if value is not None or self.readonly:
            return None if value is None else str(value)
        # two nodes at once: ON CONFLICT DO NOTHING keeps the first, both read it
        with self.transaction("giving the index its identity"):
            add_index_id(self.c.x)
        return self.index_id()

    def adopt_index_id(self, index_id: str) -> None:
        with self.transaction("taking over the copied index's identity"):
            self.set_meta(INDEX_ID_KEY, index_id)

    def set_meta(self, key: str, value: str) -> None:
        self.c.x(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
            "value = EXCLUDED.value",
            (key, value),
        )

    def counts(self) -> IndexCounts:
        files = dict(
            self.c.all(
                "SELECT CASE WHEN stored = 0 THEN 'missing' WHEN is_duplicate = 1 "
                "THEN 'conflict' ELSE 'indexed' END AS s, COUNT(*) FROM hdf5_file_index "
                "GROUP BY s"
            )
        )
        files["rejected"] = int(self.c.value("SELECT COUNT(*) FROM rejected_files"))
        groups, jobs = self.state_counts()
        events = dict(self.c.all("SELECT type, COUNT(*) FROM events GROUP BY type"))
        return IndexCounts(files=files, groups=groups, conversions=jobs, events=events)

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        groups = dict(self.c.all("SELECT state, COUNT(*) FROM groups GROUP BY state"))
        jobs = dict(self.c.all("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state"))
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
            self.c.x(
                f"INSERT INTO heartbeat ({_HEARTBEAT_COLS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (node) DO UPDATE SET pid = EXCLUDED.pid, hostname = "
                "EXCLUDED.hostname, started_at = EXCLUDED.started_at, updated_at = "
                "EXCLUDED.updated_at, status = EXCLUDED.status",
                (node, pid, hostname, started_at, now, json.dumps(status, sort_keys=True)),
            )

    def heartbeat(self, node: str) -> Heartbeat | None:
        row = self.c.first(f"SELECT {_HEARTBEAT_COLS} FROM heartbeat WHERE node = %s", (node,))
        return None if row is None else _heartbeat(row)

    def heartbeats(self) -> list[Heartbeat]:
        rows = self.c.all(f"SELECT {_HEARTBEAT_COLS} FROM heartbeat ORDER BY node")
        return [_heartbeat(r) for r in rows]

    def try_lock_node(self, node: str) -> bool:
        """A session advisory lock on this store's connection: held while the daemon's
        connection lives, released by the server when the process dies (even SIGKILL)."""
        if node in self.c.nodes_locked:
            return True
        if not self.c.lock_node(node):
            return False
        self.c.nodes_locked.add(node)
        return True

    def unlock_node(self, node: str) -> None:
        if node in self.c.nodes_locked:
            self.c.nodes_locked.discard(node)
            self.c.value("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_NODE, node))
