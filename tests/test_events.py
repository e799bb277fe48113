"""The events outbox: ``events.follow`` waits on the store between reads (LISTEN/NOTIFY on
PostgreSQL, a short poll on SQLite) and yields events in id order; the JSON-lines mirror
resumes exactly where it stopped, whatever a crash left at the end of the file."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any

from dsa110_ingest import events as ev
from dsa110_ingest.db import open_index_at
from dsa110_ingest.events import JsonlMirror, follow

from .conftest import Site, wait_for
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


def _add_many(db: Any, n: int, start: int = 0) -> None:
    with db.transaction("test events"):
        for i in range(start, start + n):
            db.add_event(ev.GROUP_COMPLETE, f"g{i}", {"i": i}, 1000.0 + i)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_follow_yields_committed_events_in_id_order_as_dicts(site: Site) -> None:
    with site.db() as db:
        _add_many(db, 3)
        polls = []

        def stop() -> bool:
            polls.append(1)
            return len(polls) > 3

        got = list(follow(db, after_id=1, wait_s=0.001, stop=stop))
    assert [e["group_id"] for e in got] == ["g1", "g2"]
    assert got[0] == {
        "id": 2,
        "type": "group.complete",
        "group_id": "g1",
        "created_at": 1001.0,
        "payload": {"i": 1},
    }


def test_the_mirror_writes_every_event_once_and_resumes_after_a_restart(
    site: Site, tmp_path: Path
) -> None:
    out = tmp_path / "mirror" / "events.jsonl"
    with site.db() as db:
        _add_many(db, 1005)  # more than one page of events_after
        assert JsonlMirror(out).sync(db) == 1005
        assert JsonlMirror(out).sync(db) == 0  # a new mirror (a restart) skips nothing
        _add_many(db, 2, start=1005)
        assert JsonlMirror(out).sync(db) == 2
    ids = [e["id"] for e in _lines(out)]
    assert ids == list(range(1, 1008))
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # events name files and groups


def test_a_torn_last_line_is_skipped_and_the_next_sync_repeats_nothing(
    site: Site, tmp_path: Path
) -> None:
    out = tmp_path / "events.jsonl"
    with site.db() as db:
        _add_many(db, 3)
        JsonlMirror(out).sync(db)
        with open(out, "a") as f:
            f.write('{"id": 4, "ty')  # the crash came mid-write
        mirror = JsonlMirror(out)
        assert mirror.last_id == 3
        _add_many(db, 1, start=3)
        assert mirror.sync(db) == 1
        assert JsonlMirror(out).sync(db) == 0
    lines = out.read_text().splitlines()
    # the torn fragment stays on a line of its own; every event is one whole line, once
    assert lines[3] == '{"id": 4, "ty'
    assert [json.loads(line)["id"] for i, line in enumerate(lines) if i != 3] == [1, 2, 3, 4]


def test_a_mirror_without_a_file_starts_from_the_beginning(tmp_path: Path) -> None:
    assert JsonlMirror(tmp_path / "none.jsonl").last_id == 0
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n[1, 2]\n")
    assert JsonlMirror(garbage).last_id == 0
