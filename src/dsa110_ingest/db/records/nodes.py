"""Rows about the index and its nodes: heartbeats, counts for ``status``, notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the ``meta`` key holding the index's identity: a random id made once with the index
#: (migration "index identity"), named by the output_dir's ownership claim
INDEX_ID_KEY = "index_id"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A daemon's last sign of life, one per node; ``status`` is the decoded JSON."""

    node: str
    pid: int | None
    hostname: str | None
    started_at: float | None
    updated_at: float | None
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """Rows by state: ``files`` (indexed/missing/conflict/rejected), ``groups``,
    ``conversions`` (jobs) and ``events`` (by type)."""

    files: dict[str, int]
    groups: dict[str, int]
    conversions: dict[str, int]
    events: dict[str, int]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "files": self.files,
            "groups": self.groups,
            "conversions": self.conversions,
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class MetaEntry:
    """One ``meta`` row: a note the index keeps about itself (longest group span, ...)."""

    key: str
    value: str | None
