"""The SQLite index's events outbox (no LISTEN: followers poll)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from dsa110_ingest.db.records import Event
from dsa110_ingest.db.store.events import EventStore

# SQLite has no LISTEN: a follower re-reads at most this often
EVENT_POLL_S = 0.5


class SqliteEvents(EventStore):
    """The events family of :class:`~dsa110_ingest.db.sqlite.index.SqliteIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    conn: sqlite3.Connection

    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO events (type, group_id, payload, created_at) VALUES (?,?,?,?)",
            (type_, group_id, json.dumps(payload, sort_keys=True), now),
        )
        return int(cur.lastrowid or 0)

    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = self.conn.execute(
            "SELECT id, type, group_id, payload, created_at FROM events WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4]) for r in rows]

    def wait_for_events(self, after_id: int, timeout: float) -> None:
        time.sleep(max(0.0, min(timeout, EVENT_POLL_S)))

    def event_id_high(self) -> int:
        """The largest event id ever handed out by this DB (AUTOINCREMENT's counter)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def raise_event_id_floor(self, floor: int) -> bool:
        """Make the next event id larger than ``floor`` (ids are never reused, even in a DB
        that replaced a lost one). True when the counter had to move."""
        with self.transaction("raising the event id floor"):
            if self.event_id_high() >= floor:
                return False
            if (
                self.conn.execute(
                    "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (floor,)
                ).rowcount
                == 0
            ):
                self.conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (floor,)
                )
            return True

    def last_activity(self) -> tuple[float, float]:
        """(last file row written, last event) as unix times; 0 when none."""
        c = self.conn
        f = c.execute("SELECT MAX(indexed_at) FROM hdf5_file_index").fetchone()[0]
        e = c.execute("SELECT created_at FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return float(f or 0), float(e[0] if e else 0)

    def count_events(self, type_: str | None = None) -> int:
        if type_:
            return int(
                self.conn.execute(
                    "SELECT COUNT(*) FROM events WHERE type = ?", (type_,)
                ).fetchone()[0]
            )
        return int(self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
