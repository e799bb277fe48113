"""Conversion-job rows: a group's conversion, its lease and outcome."""

from __future__ import annotations

from dataclasses import dataclass

JOB_COLUMNS: tuple[str, ...] = (
    "group_id",
    "state",
    "obs_mjd",
    "partial",
    "attempts",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "ms_path",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "attempt_token",
)


@dataclass(frozen=True, slots=True)
class ConversionJob:
    """One ``conversion_jobs`` row: a group's conversion, its lease and outcome."""

    group_id: str
    state: str
    obs_mjd: float | None
    partial: int
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    last_error: str | None
    ms_path: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    attempt_token: str | None
