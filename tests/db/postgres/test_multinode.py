"""What several nodes on one PostgreSQL index rely on, against a real server: clustering
serialised per time window, one completion and one expiry per group, event ids visible in
order and announced by NOTIFY, claims that never hand a job out twice, one daemon per
node name, a lost connection recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.db import IndexStore, open_index_at
from dsa110_ingest.errors import DatabaseBusyError, DatabaseError, DatabaseReadOnlyError
from tests.conftest import wait_for
from tests.pg_server import PgDatabases, PgServer

ROOT = Path(__file__).resolve().parents[3]
OBS = 1_790_000_000.0  # a name time (unix seconds)


@pytest.fixture
def pg(pg_dbs: PgDatabases) -> Iterator[IndexStore]:
    with open_index_at(pg_dbs.index) as db:
        yield db


def file_row(gid: str, sb: int, *, ts: float = OBS, **extra: Any) -> dict[str, Any]:
    return {
        "path": f"/data/{gid}_sb{sb:02d}.hdf5",
        "filename": f"{gid}_sb{sb:02d}.hdf5",
        "group_id": gid,
        "subband_num": sb,
        "subband_code": f"sb{sb:02d}",
        "stored": 1,
        "is_duplicate": 0,
        "start_mjd": 60000.0,
        "end_mjd": 60000.001,
        "timestamp_mjd": 60000.0,
        "indexed_at": ts,
        **extra,
    }


def group_with(db: IndexStore, gid: str, subbands: range, now: float = OBS) -> None:
    with db.transaction("setting up"):
        db.create_group(gid, OBS, 16, now, now + 900)
        for sb in subbands:
            db.upsert_file(file_row(gid, sb))
        db.refresh_group(gid, OBS, OBS, now)


# -- clustering: two processes, one observation ---------------------------------------
_CLUSTER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dsa110_ingest.config import GroupsConfig
    from dsa110_ingest.db import open_index_at
    from dsa110_ingest.ingest.grouping import join_group

    uri, go, locking = sys.argv[2], sys.argv[3], sys.argv[6]
    ts, sb = float(sys.argv[4]), int(sys.argv[5])

    class Slow:
        # widens the race: each writer looks, then dawdles before it creates the group
        def __init__(self, db):
            self.db = db
        def __getattr__(self, name):
            return getattr(self.db, name)
        def lock_time_window(self, ts, tol):
            if locking == "1":
                self.db.lock_time_window(ts, tol)
        def groups_near(self, ts, tol):
            out = self.db.groups_near(ts, tol)
            time.sleep(0.5)
            return out

    db = open_index_at(uri)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    import os
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.001)
    with db.transaction("placing a file"):
        pl, dup = join_group(Slow(db), ts, sb, GroupsConfig(), time.time())
        row = {"path": f"/data/{ts}_sb{sb:02d}.hdf5", "filename": f"{ts}_sb{sb:02d}.hdf5",
               "group_id": pl.group_id, "subband_num": sb, "stored": 1, "is_duplicate": 0}
        db.upsert_file(row)
        db.refresh_group(pl.group_id, pl.min_ts, pl.max_ts, time.time())
    print("placed", pl.group_id, flush=True)
    """
)


def _race(uri: str, tmp: Path, locking: bool) -> list[str]:
    """Two processes place the first two files of one observation (1 s apart in name
    time) at the same moment; returns the groups the index ends up with."""
    go = tmp / f"go-{locking}"
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", _CLUSTER, str(ROOT), uri, str(go)),
                *(str(OBS + i), str(i), "1" if locking else "0"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "placed" in out
    with open_index_at(uri) as db:
        return [g.group_id for g in db.list_groups(None, None, None)]


def test_two_processes_clustering_one_observation_make_one_group(
    pg_dbs: PgDatabases, tmp_path: Path
) -> None:
    groups = _race(pg_dbs.index, tmp_path, locking=True)
    assert len(groups) == 1, groups
    with open_index_at(pg_dbs.index) as db:
        g = db.group(groups[0])
        assert g is not None and g.n_subbands == 2
        assert {f.subband_num for f in db.group_files(groups[0])} == {0, 1}


def test_without_the_window_lock_the_same_race_makes_two_groups(
    pg_dbs: PgDatabases, tmp_path: Path
) -> None:
    """The control: the race above is real, so the lock is what prevents it."""
    assert len(_race(pg_dbs.index, tmp_path, locking=False)) == 2


def test_window_lock_blocks_an_overlapping_window_only(pg: IndexStore, pg_dbs: PgDatabases) -> None:
    entered: list[float] = []
    with open_index_at(pg_dbs.index) as other:

        def contend(ts: float) -> None:
            with other.transaction("contending"):
                other.lock_time_window(ts, 60)
                entered.append(ts)

        with pg.transaction("holding a window"):
            pg.lock_time_window(OBS, 60)
            far = threading.Thread(target=contend, args=(OBS + 3600,))
            far.start()
            far.join(30)
            assert entered == [OBS + 3600]  # an hour away: not held up
            near = threading.Thread(target=contend, args=(OBS + 100,))
            near.start()
            time.sleep(0.5)
            assert entered == [OBS + 3600]  # windows overlap: waits for our commit
        near.join(30)
        assert entered == [OBS + 3600, OBS + 100]


def test_window_widens_to_a_long_group_reached(pg: IndexStore, pg_dbs: PgDatabases) -> None:
    """A group spanning far beyond one window is changed from both ends: a writer at
    either end must wait for the other."""
    with pg.transaction("a long group"):
        pg.create_group("LONG", OBS, 16, OBS, OBS + 900)
        pg.refresh_group("LONG", OBS, OBS + 1000, OBS)
    done = threading.Event()
    with open_index_at(pg_dbs.index) as other:

        def at_far_end() -> None:
            with other.transaction("far end"):
                other.lock_time_window(OBS + 1000, 60)
            done.set()

        with pg.transaction("near end"):
            pg.lock_time_window(OBS - 30, 60)
            t = threading.Thread(target=at_far_end)
            t.start()
            assert not done.wait(0.5)
        t.join(30)
        assert done.is_set()


# -- one completion, one expiry ---------------------------------------------------------
def test_last_two_subbands_from_two_nodes_complete_the_group_once(
    pg: IndexStore, pg_dbs: PgDatabases
) -> None:
    group_with(pg, "G", range(14))
    seen: dict[str, int] = {}
    with open_index_at(pg_dbs.index) as other:

        def second() -> None:
            with other.transaction("node b"):
                other.upsert_file(file_row("G", 15))
                seen["b"] = other.refresh_group("G", OBS, OBS, OBS).n_subbands

        with pg.transaction("node a"):
            pg.upsert_file(file_row("G", 14))
            seen["a"] = pg.refresh_group("G", OBS, OBS, OBS).n_subbands
            t = threading.Thread(target=second)
            t.start()
            time.sleep(0.5)
            assert "b" not in seen  # waits on the group's row
        t.join(30)
    # the one that refreshed second counts both files: exactly one sees the group full
    assert sorted(seen.values()) == [15, 16]


def test_two_nodes_expiring_one_group_emit_one_incomplete(
    pg: IndexStore, pg_dbs: PgDatabases
) -> None:
    group_with(pg, "G", range(3))
    emitted: list[str] = []

    def expire(db: IndexStore, who: str, hold: threading.Event | None) -> None:
        with db.transaction(f"expiring ({who})"):
            for g in db.collecting_groups():
                db.set_group_state(g.group_id, "incomplete", OBS)
                db.add_event("group.incomplete", g.group_id, {}, OBS)
                emitted.append(who)
            if hold is not None:
                hold.wait(30)

    release = threading.Event()
    with open_index_at(pg_dbs.index) as other:
        a = threading.Thread(target=expire, args=(pg, "a", release))
        a.start()
        wait_for(lambda: emitted == ["a"], 30)
        b = threading.Thread(target=expire, args=(other, "b", None))
        b.start()
        time.sleep(0.5)
        release.set()
        a.join(30)
        b.join(30)
    assert emitted == ["a"]
    assert pg.count_events("group.incomplete") == 1


# -- events -------------------------------------------------------------------------------
def test_event_ids_become_visible_in_id_order(pg: IndexStore, pg_dbs: PgDatabases) -> None:
    """A later id never commits before an earlier one: a follower that read id n and
    asks for > n again never skips an event committed late."""
    ids: dict[str, int] = {}
    with open_index_at(pg_dbs.index) as other:

        def later() -> None:
            with other.transaction("second writer"):
                ids["b"] = other.add_event("group.complete", "B", {}, OBS)

        with pg.transaction("first writer"):
            ids["a"] = pg.add_event("group.complete", "A", {}, OBS)
            t = threading.Thread(target=later)
            t.start()
            time.sleep(0.5)
            assert "b" not in ids  # the second event waits for the first to commit
            with open_index_at(pg_dbs.index) as follower:
                assert follower.events_after(0) == []
        t.join(30)
    assert ids["a"] < ids["b"]
    assert [e.group_id for e in pg.events_after(0)] == ["A", "B"]


def test_notify_wakes_a_follower_and_a_rollback_does_not(
    pg: IndexStore, pg_dbs: PgDatabases
) -> None:
    with open_index_at(pg_dbs.index) as writer:

        def write(commit: bool) -> None:
            time.sleep(0.3)
            try:
                with writer.transaction("writing an event"):
                    writer.add_event("group.complete", "G", {}, OBS)
                    if not commit:
                        raise RuntimeError("rolled back")
            except RuntimeError:
                pass

        t = threading.Thread(target=write, args=(False,))
        t.start()
        t0 = time.monotonic()
        pg.wait_for_events(0, 2.0)  # the rolled-back event announces nothing
        assert time.monotonic() - t0 >= 1.9
        t.join()
        t = threading.Thread(target=write, args=(True,))
        t.start()
        t0 = time.monotonic()
        pg.wait_for_events(pg.event_id_high(), 60)  # the rolled-back id stays used
        assert time.monotonic() - t0 < 30
        t.join()
    # an event already there: no wait at all
    t0 = time.monotonic()
    pg.wait_for_events(0, 60)
    assert time.monotonic() - t0 < 30
    assert [e.group_id for e in pg.events_after(0)] == ["G"]


def test_event_id_floor_and_high(pg: IndexStore) -> None:
    assert pg.event_id_high() == 0
    assert pg.raise_event_id_floor(500) is True
    assert pg.raise_event_id_floor(10) is False
    with pg.transaction():
        assert pg.add_event("group.complete", "G", {}, OBS) == 501
    assert pg.event_id_high() == 501


# -- conversion claims ------------------------------------------------------------------
def test_concurrent_claimers_never_share_a_job(pg: IndexStore, pg_dbs: PgDatabases) -> None:
    n = 40
    with pg.transaction("queueing"):
        for i in range(n):
            gid = f"G{i:03d}"
            pg.create_group(gid, OBS + i * 300, 16, OBS, OBS + 900)
            pg.enqueue_job(gid, 60000.0 + i, OBS)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with open_index_at(pg_dbs.index) as db:
            while True:
                job = db.claim_job(f"node{k}", time.time(), 600, newest_first=bool(k % 2))
                if job is None:
                    return
                with lock:
                    claimed.append(job.group_id)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(claimed) == [f"G{i:03d}" for i in range(n)]


def test_an_expired_lease_is_claimable_again(pg: IndexStore) -> None:
    group_with(pg, "G", range(16))
    with pg.transaction():
        pg.enqueue_job("G", None, OBS)
    first = pg.claim_job("a", 1000.0, 60, False)
    assert first is not None and pg.claim_job("b", 1030.0, 60, False) is None
    second = pg.claim_job("b", 1061.0, 60, False)
    assert second is not None and second.attempts == 2
    assert second.attempt_token != first.attempt_token
    with pg.transaction():
        # the first attempt's late result is fenced off
        assert not pg.finish_job("G", "a", "converted", 1070.0, token=first.attempt_token or "")
        assert pg.finish_job("G", "b", "converted", 1070.0, token=second.attempt_token or "")


# -- one daemon per node ---------------------------------------------------------------
_HOLD_NODE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dsa110_ingest.db import open_index_at
    db = open_index_at(sys.argv[2])
    print("locked" if db.try_lock_node("north") else "refused", flush=True)
    time.sleep(600)
    """
)


def test_node_lock_is_held_per_name_and_freed_by_sigkill(
    pg: IndexStore, pg_dbs: PgDatabases
) -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLD_NODE, str(ROOT), pg_dbs.index],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        assert pg.try_lock_node("north") is False
        assert pg.try_lock_node("south") is True
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    # the server ends the dead process's session, and its lock with it
    wait_for(lambda: pg.try_lock_node("north"), 60, "node lock not freed by SIGKILL")
    pg.unlock_node("north")
    with open_index_at(pg_dbs.index) as other:
        assert other.try_lock_node("north") is True


def test_a_lost_connection_is_busy_once_then_reopened_with_its_node_lock(
    pg: IndexStore, pg_dbs: PgDatabases
) -> None:
    import psycopg

    assert pg.try_lock_node("north")
    pid = pg.dbapi_connection().info.backend_pid
    with psycopg.connect(pg_dbs.index, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DatabaseBusyError, match="retried"):
        pg.count_events()
    assert pg.count_events() == 0  # opened again
    assert pg.dbapi_connection().info.backend_pid != pid
    with open_index_at(pg_dbs.index) as other:
        assert other.try_lock_node("north") is False  # taken again on reconnect


def test_readonly_store_refuses_writes(pg: IndexStore, pg_dbs: PgDatabases) -> None:
    with open_index_at(pg_dbs.index, readonly=True) as ro:
        assert ro.count_events() == 0
        with pytest.raises(DatabaseReadOnlyError, match="refused a write"), ro.transaction():
            ro.add_event("group.complete", "G", {}, OBS)


def test_messages_never_show_the_password(pg_server: PgServer) -> None:
    uri = f"postgresql://postgres:s3cret@/no_such_db?host={pg_server.socket_dir}"
    with pytest.raises(DatabaseError) as e:
        open_index_at(uri)
    assert "s3cret" not in str(e.value)
    assert "cannot connect to postgresql://postgres@/no_such_db" in str(e.value)
