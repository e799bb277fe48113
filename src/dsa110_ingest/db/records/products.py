"""Products rows: ``ms_index``, one row per Measurement Set."""

from __future__ import annotations

from dataclasses import dataclass

MS_COLUMNS: tuple[str, ...] = (
    "path",
    "start_mjd",
    "end_mjd",
    "mid_mjd",
    "processed_at",
    "status",
    "stage",
    "stage_updated_at",
    "cal_applied",
    "imagename",
    "ra_deg",
    "dec_deg",
    "group_id",
    "n_subbands",
    "missing_subbands",
    "n_channels",
    "freq_min_hz",
    "freq_max_hz",
)
"""Columns of ``ms_index`` in order; the key is ``path``."""


@dataclass(frozen=True, slots=True)
class MsRecord:
    """One ``ms_index`` row: a Measurement Set and what it holds."""

    path: str
    start_mjd: float | None
    end_mjd: float | None
    mid_mjd: float | None
    processed_at: float | None
    status: str | None
    stage: str | None
    stage_updated_at: float | None
    cal_applied: int | None
    imagename: str | None
    ra_deg: float | None
    dec_deg: float | None
    group_id: str | None
    n_subbands: int | None
    missing_subbands: str | None
    n_channels: int | None
    freq_min_hz: float | None
    freq_max_hz: float | None
