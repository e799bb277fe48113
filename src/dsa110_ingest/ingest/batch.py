"""What indexing a batch of files did: counts, events, rejections, files deferred."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchResult:
    indexed: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    rejected: int = 0
    missing: int = 0  # files no longer on disk (the DB's `stored` = 0)
    deferred: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (type, group_id)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    missing_locations: list[str] = field(default_factory=list)
    completed_by: dict[str, str] = field(default_factory=dict)  # group_id -> last file
    stopped: bool = False  # a reconcile ended early (a stop was asked); the rest is next time

    def add(self, other: BatchResult) -> None:
        for count in ("indexed", "updated", "moved", "unchanged", "rejected", "missing"):
            setattr(self, count, getattr(self, count) + getattr(other, count))
        self.deferred += other.deferred
        self.completed_by.update(other.completed_by)
        self.events += other.events
        self.rejections += other.rejections
        self.missing_locations += other.missing_locations
        self.stopped = self.stopped or other.stopped

    @property
    def seen(self) -> int:
        return self.indexed + self.updated + self.moved + self.unchanged + self.rejected
