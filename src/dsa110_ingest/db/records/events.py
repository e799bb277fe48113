"""Event rows: the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox event; ``payload`` is the decoded JSON object."""

    id: int
    type: str
    group_id: str | None
    payload: dict[str, Any]
    created_at: float
