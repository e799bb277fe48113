"""The PostgreSQL index's events outbox.

Event ids are handed out under a transaction lock, so they become visible in id order and
a consumer that remembers the last id it read never skips one committed late; ``NOTIFY``
is sent in the event's own transaction (delivered on commit) and
:meth:`PgEvents.wait_for_events` ``LISTEN``\\ s on a second connection."""

from __future__ import annotations

import json
import select
import time
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.connection import connect, translate
from dsa110_ingest.db.postgres.schema import LOCK_EVENTS
from dsa110_ingest.db.records import Event
from dsa110_ingest.db.store.events import EventStore

EVENTS_CHANNEL = "dsa110_events"


class PgEvents(EventStore):
    """The events family of :class:`~dsa110_ingest.db.postgres.index.PostgresIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    c: PgConnection
    uri: str
    _pg: Any
    _listener: Any

    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        # ids in commit order: a sequence hands them out in call order, but a transaction
        # that took id 10 may commit after the one that took 11, and a follower that read
        # 11 would skip 10 for good. Holding this lock until COMMIT orders them.
        self.c.x("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_EVENTS,))
        event_id = int(
            self.c.value(
                "INSERT INTO events (type, group_id, payload, created_at) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (type_, group_id, json.dumps(payload, sort_keys=True), now),
            )
        )
        # delivered at COMMIT, never for a rolled-back event
        self.c.x("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(event_id)))
        return event_id

    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = self.c.all(
            "SELECT id, type, group_id, payload, created_at FROM events WHERE id > %s "
            "ORDER BY id LIMIT %s",
            (after_id, limit),
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4]) for r in rows]

    def wait_for_events(self, after_id: int, timeout: float) -> None:
        """LISTEN on a connection of its own (opened on first use), then look: an event
        committed between the look and the wait is still announced, so none is missed
        and nothing polls."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                self._listener = connect(self.uri, application="dsa110-ingest events")
                self._listener.execute(f"LISTEN {EVENTS_CHANNEL}")
            self._drain_notifications()
        except self._pg.Error as e:
            raise translate(e, self.name, "listening for events") from None
        newest = self.c.value("SELECT MAX(id) FROM events")
        if newest is not None and int(newest) > after_id:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            for _ in self._listener.notifies(timeout=remaining, stop_after=1):
                return
        except self._pg.Error as e:
            raise translate(e, self.name, "waiting for events") from None

    def _drain_notifications(self) -> None:
        """Discard announcements already read from the socket: their events are covered by
        the MAX(id) look that follows."""
        pgconn = self._listener.pgconn
        while select.select([pgconn.socket], [], [], 0)[0]:
            pgconn.consume_input()
            if pgconn.notifies() is None:
                break
        while pgconn.notifies() is not None:
            pass

    def event_id_high(self) -> int:
        v = self.c.value(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass)"
        )
        return int(v) if v is not None else 0

    def raise_event_id_floor(self, floor: int) -> bool:
        with self.transaction("raising the event id floor"):
            self.c.x("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_EVENTS,))
            if self.event_id_high() >= floor:
                return False
            self.c.x("SELECT setval(pg_get_serial_sequence('events', 'id'), %s, true)", (floor,))
            return True

    def last_activity(self) -> tuple[float, float]:
        f = self.c.value("SELECT MAX(indexed_at) FROM hdf5_file_index")
        e = self.c.value("SELECT created_at FROM events ORDER BY id DESC LIMIT 1")
        return float(f or 0), float(e or 0)

    def count_events(self, type_: str | None = None) -> int:
        if type_:
            return int(self.c.value("SELECT COUNT(*) FROM events WHERE type = %s", (type_,)))
        return int(self.c.value("SELECT COUNT(*) FROM events"))
