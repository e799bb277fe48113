"""Nodes and status: heartbeats, the one-daemon-per-node lock, counts, notes."""

from __future__ import annotations

import abc
from typing import Any

from dsa110_ingest.db.records import Heartbeat, IndexCounts
from dsa110_ingest.db.store.base import Store


class NodeStore(Store):
    """What the index says about itself and the daemons using it: key/value notes,
    counts for ``status``, each node's heartbeat and its daemon lock."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """*Inside a transaction.* Store a key/value note (migration markers)."""

    @abc.abstractmethod
    def index_id(self) -> str | None:
        """The index's identity: a random id made once with the database (migration
        "index identity"), kept by backups and carried over by ``migrate --to``; the
        output_dir's ownership claim names it. A database that lost the row (a table
        emptied by hand) gets a new id here; None only when opened read-only before the
        migration ran (an older daemon's index)."""

    @abc.abstractmethod
    def adopt_index_id(self, index_id: str) -> None:
        """*Own transaction.* Take the identity of the index this one is a copy of
        (``migrate --to``: the same index, moved to another backend)."""

    @abc.abstractmethod
    def counts(self) -> IndexCounts:
        """Rows by state for ``status`` (scans the file index: not for a hot path)."""

    @abc.abstractmethod
    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(groups by state, conversion jobs by state); cheap."""

    @abc.abstractmethod
    def write_heartbeat(
        self,
        node: str,
        pid: int,
        hostname: str,
        started_at: float,
        now: float,
        status: dict[str, Any],
    ) -> None:
        """*Own transaction.* Replace ``node``'s heartbeat row."""

    @abc.abstractmethod
    def heartbeat(self, node: str) -> Heartbeat | None:
        """``node``'s last heartbeat, or None."""

    @abc.abstractmethod
    def heartbeats(self) -> list[Heartbeat]:
        """Every node's last heartbeat, by node name."""

    @abc.abstractmethod
    def try_lock_node(self, node: str) -> bool:
        """Claim the right to run the daemon of ``node`` for as long as this store is
        open; False when another live process holds it. SQLite: always True (the
        state-directory lock file does this); PostgreSQL: a session advisory lock."""

    @abc.abstractmethod
    def unlock_node(self, node: str) -> None:
        """Give up what :meth:`try_lock_node` took (closing the store does too)."""
