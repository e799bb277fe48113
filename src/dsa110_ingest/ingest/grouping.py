"""Clustering files into observations (groups), independent of arrival order.

The 16 files of one observation carry different timestamps (one per correlator node,
seconds apart). A group is a connected cluster: files whose name timestamps lie within
``tolerance`` of another file of the group. Because a late file can bridge two clusters,
placing a file may merge groups; because the group id is the earliest timestamp of the
group, a file earlier than all others renames the group. Both are allowed only while a
group is *open* (no event has named it yet); afterwards its id is frozen and an extra file
is a conflict. For any set of files with one file per subband and observation, every
arrival order therefore ends in the same groups with the same ids as a time-sorted backfill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dsa110_ingest.config import GroupsConfig
from dsa110_ingest.times import unix_to_iso

OPEN_STATES = frozenset({"collecting"})


@dataclass(frozen=True, slots=True)
class GroupSpan:
    group_id: str
    min_ts: float
    max_ts: float
    state: str

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def distance(self, ts: float) -> float:
        if self.min_ts <= ts <= self.max_ts:
            return 0.0
        return min(abs(ts - self.min_ts), abs(ts - self.max_ts))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a file goes: ``target`` (None: a new group), which open groups merge into
    it, and the group's id afterwards (a rename when it differs from the target's)."""

    target: GroupSpan | None
    merge: tuple[GroupSpan, ...]
    group_id: str
    min_ts: float
    max_ts: float


def place(ts: float, neighbours: list[GroupSpan]) -> Placement:
    """Decide the group of a file at name time ``ts``, given the groups within tolerance."""
    if not neighbours:
        return Placement(None, (), unix_to_iso(ts), ts, ts)
    frozen = [g for g in neighbours if not g.is_open]
    if frozen:
        # a frozen group keeps its id and members; open neighbours join it
        target = min(frozen, key=lambda g: (g.distance(ts), g.min_ts))
    else:
        target = min(neighbours, key=lambda g: (g.min_ts, g.group_id))
    merge = tuple(g for g in neighbours if g.is_open and g.group_id != target.group_id)
    lo = min([ts, target.min_ts, *(g.min_ts for g in merge)])
    hi = max([ts, target.max_ts, *(g.max_ts for g in merge)])
    gid = unix_to_iso(lo) if target.is_open else target.group_id
    return Placement(target, merge, gid, lo, hi)


class GroupStore(Protocol):
    """What grouping needs from a database (``db.hdf5.Hdf5DB`` provides it)."""

    def groups_near(self, ts: float, tolerance: float) -> list[GroupSpan]: ...
    def create_group(
        self, group_id: str, ts: float, expected: int, now: float, deadline: float
    ) -> None: ...
    def absorb_group(self, target: str, other: str) -> None: ...
    def rename_group(self, old: str, new: str) -> None: ...
    def subband_taken(self, group_id: str, subband: int) -> bool: ...


def join_group(
    db: GroupStore, ts: float, subband: int, g: GroupsConfig, now: float
) -> tuple[Placement, bool]:
    """Place a file in its group, creating, merging or renaming groups as needed, inside
    the caller's transaction. Returns the placement and whether the subband was taken."""
    pl = place(ts, db.groups_near(ts, g.cluster_tolerance_seconds))
    if pl.target is None:
        db.create_group(
            pl.group_id, ts, g.expected_subbands, now, now + g.incomplete_timeout_seconds
        )
    else:
        for other in pl.merge:
            db.absorb_group(pl.target.group_id, other.group_id)
        if pl.group_id != pl.target.group_id:
            db.rename_group(pl.target.group_id, pl.group_id)
    return pl, db.subband_taken(pl.group_id, subband)
