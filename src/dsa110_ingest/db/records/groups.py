"""Group rows: an observation's state, counts and spans, and the views of it."""

from __future__ import annotations

from dataclasses import dataclass

GROUP_COLUMNS: tuple[str, ...] = (
    "group_id",
    "state",
    "n_subbands",
    "expected_subbands",
    "n_conflicts",
    "min_ts",
    "max_ts",
    "start_mjd",
    "end_mjd",
    "first_seen_at",
    "last_seen_at",
    "completed_at",
    "incomplete_at",
    "deadline_at",
)


@dataclass(frozen=True, slots=True)
class GroupSpan:
    """A group's name-time span, all that clustering needs to place a file."""

    group_id: str
    min_ts: float
    max_ts: float
    state: str

    @property
    def is_collecting(self) -> bool:
        """Still ``collecting``: it may merge with a neighbour or be renamed."""
        return self.state == "collecting"

    def distance(self, ts: float) -> float:
        if self.min_ts <= ts <= self.max_ts:
            return 0.0
        return min(abs(ts - self.min_ts), abs(ts - self.max_ts))


@dataclass(frozen=True)
class Group:
    """One ``groups`` row (an observation): state, counts, spans, deadlines."""

    group_id: str
    state: str
    n_subbands: int
    expected_subbands: int
    n_conflicts: int
    min_ts: float
    max_ts: float
    start_mjd: float | None
    end_mjd: float | None
    first_seen_at: float
    last_seen_at: float
    completed_at: float | None
    incomplete_at: float | None
    deadline_at: float


@dataclass(frozen=True)
class GroupSummary(Group):
    """A group with its conversion job's state (None fields: no job), for listings."""

    convert_state: str | None = None
    attempts: int | None = None
    last_error: str | None = None
    ms_path: str | None = None
    next_attempt_at: float | None = None


@dataclass(frozen=True)
class SubbandGroup:
    """One observation as returned by ``find_subband_groups_from_db``."""

    group_id: str
    state: str
    n_subbands: int
    expected_subbands: int
    start_mjd: float | None
    end_mjd: float | None
    files: tuple[str, ...]  # member files on disk, ordered by subband number
    subbands: tuple[int, ...]

    @property
    def is_complete(self) -> bool:
        return self.n_subbands >= self.expected_subbands

    @property
    def missing_subbands(self) -> tuple[int, ...]:
        have = set(self.subbands)
        return tuple(i for i in range(self.expected_subbands) if i not in have)
