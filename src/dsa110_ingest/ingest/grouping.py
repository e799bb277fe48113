"""Clustering files into observations (groups), independent of arrival order.

The 16 files of one observation carry different timestamps (one per correlator node,
seconds apart). A group is a connected cluster: files whose name timestamps lie within
``tolerance`` of another file of the group. Because a late file can bridge two clusters,
placing a file may merge groups; because the group id is the earliest timestamp of the
group, a file earlier than all others renames the group. Both are allowed only while a
group is ``collecting`` (no event has named it yet); afterwards its id is frozen and an
extra file is a conflict. For any set of files with one file per subband and observation,
every arrival order therefore ends in the same groups with the same ids as a time-sorted
backfill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dsa110_ingest.config import GroupsConfig
from dsa110_ingest.db.records import GroupSpan
from dsa110_ingest.times import unix_to_iso


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a file goes: ``target`` (None: a new group), which collecting groups merge into
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
    frozen = [g for g in neighbours if not g.is_collecting]
    if frozen:
        # a frozen group keeps its id and members; collecting neighbours join it
        target = min(frozen, key=lambda g: (g.distance(ts), g.min_ts))
    else:
        target = min(neighbours, key=lambda g: (g.min_ts, g.group_id))
    merge = tuple(g for g in neighbours if g.is_collecting and g.group_id != target.group_id)
    lo = min([ts, target.min_ts, *(g.min_ts for g in merge)])
    hi = max([ts, target.max_ts, *(g.max_ts for g in merge)])
    gid = unix_to_iso(lo) if target.is_collecting else target.group_id
    return Placement(target, merge, gid, lo, hi)


class GroupStore(Protocol):
    """What grouping needs from a database (``db.store.IndexStore`` provides it)."""

    def lock_time_window(self, ts: float, tolerance: float) -> None: ...
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
    # two writers (nodes) placing files of one observation must not both create a group
    db.lock_time_window(ts, g.cluster_tolerance_seconds)
    placement = place(ts, db.groups_near(ts, g.cluster_tolerance_seconds))
    if placement.target is None:
        db.create_group(
            placement.group_id, ts, g.expected_subbands, now, now + g.incomplete_timeout_seconds
        )
    else:
        for other in placement.merge:
            db.absorb_group(placement.target.group_id, other.group_id)
        if placement.group_id != placement.target.group_id:
            db.rename_group(placement.target.group_id, placement.group_id)
    return placement, db.subband_taken(placement.group_id, subband)


@dataclass(frozen=True, slots=True)
class Band:
    """The frequencies one member file of a group covers (channel centres, Hz)."""

    path: str
    subband: int
    fmin: float
    fmax: float

    @property
    def centre(self) -> float:
        return (self.fmin + self.fmax) / 2.0


def overlaps(a: Band, b: Band) -> bool:
    """Two subbands of one observation never share a channel: adjacent ones differ by a
    channel width, so touching centres already mean the same frequency twice."""
    return max(a.fmin, b.fmin) <= min(a.fmax, b.fmax)


def band_plan(others: list[Band]) -> tuple[float, float] | None:
    """(centre of subband 0, Hz per subband index) fitted to files with distinct
    subbands; None while fewer than two are known (the plan is not known yet)."""
    by_sb = {o.subband: o.centre for o in others}
    if len(by_sb) < 2:
        return None
    xs = list(by_sb)
    ys = [by_sb[x] for x in xs]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if slope == 0:
        return None
    return my - slope * mx, slope


def suspect(new: Band, old: Band, others: list[Band]) -> tuple[Band, bool]:
    """Which of two overlapping files is the wrong one, and whether that is known.

    With a band plan from the other files, the file whose frequencies sit outside the
    band of the subband its name claims is the suspect. Without one (or when both or
    neither fit), it is the later arrival, and the verdict is marked unsure.
    """
    plan = band_plan(others)
    if plan is not None:
        c0, step = plan
        off_new = abs(new.centre - (c0 + step * new.subband)) > abs(step) / 2
        off_old = abs(old.centre - (c0 + step * old.subband)) > abs(step) / 2
        if off_new != off_old:
            return (new, True) if off_new else (old, True)
    return new, False
