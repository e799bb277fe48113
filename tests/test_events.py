"""``events.follow`` waits on the store between reads: LISTEN/NOTIFY on PostgreSQL (an
event wakes it long before its wait would end), a short poll on SQLite."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from dsa110_ingest.db import open_index_at
from dsa110_ingest.events import follow

from .conftest import wait_for
from .pg_server import PgDatabases


def _follow_in_thread(target: Any, wait_s: float) -> tuple[list[dict[str, Any]], Any, Any]:
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    listening = threading.Event()

    def run() -> None:
        with open_index_at(target, readonly=True) as db:
            listening.set()
            for e in follow(db, 0, wait_s=wait_s, stop=stop.is_set):
                seen.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert listening.wait(30)
    return seen, stop, th


def _add(target: Any, group: str) -> int:
    with open_index_at(target) as db, db.transaction():
        return db.add_event("group.complete", group, {"n_subbands": 16}, 1.0)


def test_follow_on_postgresql_is_woken_by_notify(pg_dbs: PgDatabases) -> None:
    first = _add(pg_dbs.index, "g1")
    # a wait far longer than the deadline below: only a NOTIFY can deliver in time
    seen, stop, th = _follow_in_thread(pg_dbs.index, wait_s=600)
    wait_for(lambda: [e["id"] for e in seen] == [first], 30)
    second = _add(pg_dbs.index, "g2")
    wait_for(lambda: [e["id"] for e in seen] == [first, second], 30, lambda: str(seen))
    assert seen[1]["group_id"] == "g2" and seen[1]["payload"] == {"n_subbands": 16}
    stop.set()
    _add(pg_dbs.index, "g3")  # wakes the wait, which then sees stop
    th.join(30)
    assert not th.is_alive()


def test_follow_on_sqlite_sees_commits_of_another_connection(tmp_path: Path) -> None:
    db_path = tmp_path / "hdf5.sqlite3"
    first = _add(db_path, "g1")
    seen, stop, th = _follow_in_thread(db_path, wait_s=600)
    second = _add(db_path, "g2")
    wait_for(lambda: [e["id"] for e in seen] == [first, second], 30, lambda: str(seen))
    stop.set()
    th.join(30)  # SQLite's wait is its own short poll, whatever wait_s says
    assert not th.is_alive()
