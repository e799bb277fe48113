"""Group events: an outbox table in the HDF5 DB, written in the same transaction as the
state change it reports, so a crash can lose neither the change nor its event.

Types:
- ``group.complete``   all expected subbands are indexed (once per group);
- ``group.incomplete`` the group timed out with subbands missing (payload names them);
- ``group.conflict``   a second file arrived for a subband the group already has (or a
  member of a converted group changed on disk, or another file took its slot:
  ``reason`` ``member_changed``);
- ``group.converted``  its Measurement Set is written and recorded in ``ms_index``;
- ``group.failed``     conversion gave up after ``max_attempts`` (payload: the error).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsa110_ingest.db.records import Event
from dsa110_ingest.db.store import IndexStore
from dsa110_ingest.statedir import open_private

GROUP_COMPLETE = "group.complete"
GROUP_INCOMPLETE = "group.incomplete"
GROUP_CONFLICT = "group.conflict"
GROUP_CONVERTED = "group.converted"
GROUP_FAILED = "group.failed"


def event_dict(row: Event) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "group_id": row.group_id,
        "created_at": row.created_at,
        "payload": row.payload,
    }


def follow(
    db: IndexStore, after_id: int = 0, wait_s: float = 5.0, stop: Any = None
) -> Iterator[dict[str, Any]]:
    """Yield events as they are committed (the DB is the source of truth, not a pipe).

    Between reads the store waits for the next commit (PostgreSQL: LISTEN/NOTIFY;
    SQLite: its own short poll); ``wait_s`` only bounds how long ``stop`` goes unasked."""
    last = after_id
    while stop is None or not stop():
        rows = db.events_after(last)
        for r in rows:
            last = r.id
            yield event_dict(r)
        if not rows:
            db.wait_for_events(last, wait_s)


class JsonlMirror:
    """Optional copy of events in a JSON-lines file, for tailing and simple scripts.

    It resumes from the last id it wrote, so after a crash it neither skips nor repeats.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # a crash mid-write leaves a torn last line: the next event must not be glued to it
        self._torn = False
        self.last_id = self._last_written()

    def _last_written(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 65536))
                tail = f.read()
        except FileNotFoundError:
            return 0
        self._torn = bool(tail) and not tail.endswith(b"\n")
        lines = tail.splitlines()
        for line in reversed(lines):
            try:
                return int(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash
        return 0

    def sync(self, db: IndexStore) -> int:
        n = 0
        while rows := db.events_after(self.last_id):
            # 0640 in a 0750 folder whatever the umask: events name files and groups
            with open(open_private(self.path), "a", encoding="utf-8") as f:
                if self._torn:
                    f.write("\n")
                    self._torn = False
                for r in rows:
                    f.write(json.dumps(event_dict(r), sort_keys=True) + "\n")
                    self.last_id = r.id
                    n += 1
                f.flush()
                os.fsync(f.fileno())
        return n
