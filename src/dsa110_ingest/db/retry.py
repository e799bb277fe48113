"""Retrying a whole write when the database stays busy (any backend)."""

from __future__ import annotations

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from dsa110_ingest.errors import DatabaseBusyError


def busy_retry(max_seconds: float = 120.0):  # type: ignore[no-untyped-def]
    """Retry a whole write when the DB stays busy past the busy timeout."""
    return retry(
        retry=retry_if_exception_type(DatabaseBusyError),
        stop=stop_after_delay(max_seconds),
        wait=wait_exponential(0.1, max=5),
        reraise=True,
    )
