"""The events outbox: what happened, in id order, for followers."""

from __future__ import annotations

import abc
from typing import Any

from dsa110_ingest.db.records import Event
from dsa110_ingest.db.store.base import Store


class EventStore(Store):
    """The outbox: events written in the transaction of the change they report, ids
    that only grow, and a way for a follower to wait for the next one."""

    @abc.abstractmethod
    def add_event(
        self, type_: str, group_id: str | None, payload: dict[str, Any], now: float
    ) -> int:
        """*Inside a transaction* (the one making the change it reports). Returns the new
        event's id: ids only grow and are never reused."""

    @abc.abstractmethod
    def events_after(self, after_id: int, limit: int = 1000) -> list[Event]:
        """Committed events with id > ``after_id``, by id, at most ``limit``."""

    @abc.abstractmethod
    def wait_for_events(self, after_id: int, timeout: float) -> None:
        """Return when an event newer than ``after_id`` may exist, or after ``timeout``
        seconds (SQLite: sleeps min(timeout, 0.5); PostgreSQL: LISTEN/NOTIFY)."""

    @abc.abstractmethod
    def event_id_high(self) -> int:
        """The largest event id ever handed out (0 for none), deleted events included."""

    @abc.abstractmethod
    def raise_event_id_floor(self, floor: int) -> bool:
        """*Own transaction.* Make the next event id larger than ``floor``; True when the
        counter had to move."""

    @abc.abstractmethod
    def last_activity(self) -> tuple[float, float]:
        """(last file row written, last event) as unix times; 0 when none."""

    @abc.abstractmethod
    def count_events(self, type_: str | None = None) -> int:
        """Number of events, optionally of one type."""
