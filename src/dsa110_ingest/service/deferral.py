"""Files the daemon could not take yet, retried later from the loop.

Two causes, one schedule: a file its writer still holds locked (the indexer reports it
``deferred``), and a batch the HDF5 DB refused (locked past every retry of
``busy_retry``). Each path is retried after 0.5 s (1 s for a refused batch), the delay
doubling up to 30 s, until ``[watch] locked_retry_max_seconds``; then it is dropped with
``file.still_locked`` and the next reconcile picks it up.

Not tenacity: tenacity retries one call by waiting inside it. Here many paths wait at
once and the loop must keep turning meanwhile (events, heartbeats), so this is a
schedule the loop polls, not a retrying call. The blocking retries stay where they fit
tenacity: the DB's ``busy_retry`` and the header reader's lock wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("dsa110_ingest.service")

FIRST_DELAY_S = 0.5
REFUSED_DELAY_S = 1.0  # the DB refused the whole batch: give it a little longer
MAX_DELAY_S = 30.0


@dataclass
class _Entry:
    first: float  # monotonic time of the first deferral
    next_at: float
    seen_at: float  # wall time the file was seen finished (for the latency metrics)
    delay: float = FIRST_DELAY_S


class LockedFiles:
    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def defer(self, path: str, seen_at: float, first_delay: float = FIRST_DELAY_S) -> None:
        """Retry ``path`` later; a path already waiting keeps its schedule."""
        if path not in self._entries:
            now = self.clock()
            self._entries[path] = _Entry(now, now + first_delay, seen_at)

    def discard(self, path: str) -> None:
        """Taken (indexed, rejected) or moved away: no retry."""
        self._entries.pop(path, None)

    def due(self) -> list[tuple[str, float]]:
        """(path, seen_at) to try again now; paths past the limit are dropped and logged."""
        if not self._entries:
            return []
        now = self.clock()
        out = []
        for path, e in list(self._entries.items()):
            if e.next_at > now:
                continue
            e.delay = min(e.delay * 2, MAX_DELAY_S)
            e.next_at = now + e.delay
            if now - e.first > self.limit_s:
                log.error(
                    "file.still_locked",
                    path=path,
                    seconds=round(now - e.first),
                    hint="a writer has held it open too long; it is retried by the next reconcile",
                )
                del self._entries[path]
            else:
                out.append((path, e.seen_at))
        return out
