"""Time conversions between the three clocks the files use: UTC ISO names, JD, MJD."""

from __future__ import annotations

from datetime import UTC, datetime

MJD_UNIX_EPOCH = 40587.0  # MJD of 1970-01-01T00:00:00 UTC
JD_MJD_OFFSET = 2400000.5
SECONDS_PER_DAY = 86400.0


def unix_to_mjd(t: float) -> float:
    return t / SECONDS_PER_DAY + MJD_UNIX_EPOCH


def mjd_to_unix(mjd: float) -> float:
    return (mjd - MJD_UNIX_EPOCH) * SECONDS_PER_DAY


def jd_to_mjd(jd: float) -> float:
    return jd - JD_MJD_OFFSET


def iso_to_unix(iso: str) -> float:
    """Parse an ISO-8601 UTC time (naive means UTC) to unix seconds."""
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def unix_to_iso(t: float) -> str:
    """Unix seconds to the correlator's ``YYYY-MM-DDTHH:MM:SS`` form (UTC, no zone)."""
    return datetime.fromtimestamp(round(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
