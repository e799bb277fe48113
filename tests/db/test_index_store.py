"""The index store's contract (db/store/) on every backend of STORE_BACKENDS."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dsa110_ingest.db import FILE_COLUMNS, IndexStore
from dsa110_ingest.db.records import (
    GROUP_COLUMNS,
    JOB_COLUMNS,
    ConversionJob,
    FileRecord,
    Group,
    field_names,
)

GID = "2025-10-02T00:00:00"
T0 = 1759363200.0


def test_column_lists_match_the_records() -> None:
    assert field_names(FileRecord) == FILE_COLUMNS
    assert field_names(Group) == GROUP_COLUMNS
    assert field_names(ConversionJob) == JOB_COLUMNS


def _file(sb: int, **kw: Any) -> dict[str, Any]:
    return {
        "path": f"/data/{GID}_sb{sb:02d}.hdf5",
        "filename": f"{GID}_sb{sb:02d}.hdf5",
        "group_id": GID,
        "subband_num": sb,
        "stored": 1,
        "is_duplicate": 0,
        "start_mjd": 60950.0,
        "end_mjd": 60950.003,
        **kw,
    }


def _group_with(db: IndexStore, subbands: range) -> Group:
    with db.transaction("test group"):
        db.create_group(GID, T0, 16, T0 + 1, T0 + 600)
        for sb in subbands:
            db.upsert_file(_file(sb))
        return db.refresh_group(GID, T0, T0 + 2, T0 + 5)


def test_every_file_column_round_trips(index_store: IndexStore) -> None:
    db = index_store
    lid = db.ensure_location("incoming", "/data", "incoming")
    row = {c: None for c in FILE_COLUMNS} | _file(3, storage_location_id=lid, mtime_ns=7)
    for i, c in enumerate(FILE_COLUMNS):
        if row[c] is None:
            row[c] = float(i) if c.endswith(("_mjd", "_hz", "_deg", "_s", "_time", "_at")) else i
    for c in ("subband_code", "timestamp_iso", "obs_date", "obs_time"):
        row[c] = f"text {c}"
    row["telescope_name"] = "OVRO_MMA"
    row["legacy_extra"] = '{"a": 1}'
    with db.transaction("one file"):
        db.create_group(GID, T0, 16, T0, T0 + 600)
        db.upsert_file(row)
    got = db.get_file(row["path"])
    assert got is not None
    assert {c: getattr(got, c) for c in FILE_COLUMNS} == row
    assert db.files_named(row["filename"]) == [got]
    assert db.known_files(lid) == {row["path"]: db.known_files(lid)[row["path"]]}
    with db.transaction("again"):
        assert not db.insert_file_if_new(row)
        db.upsert_file({**row, "n_ants": 110})
    assert db.get_file(row["path"]).n_ants == 110  # type: ignore[union-attr]


def test_a_failed_transaction_writes_nothing(index_store: IndexStore) -> None:
    db = index_store
    with pytest.raises(RuntimeError), db.transaction("doomed"):
        db.create_group(GID, T0, 16, T0, T0 + 600)
        db.add_event("group.complete", GID, {}, T0)
        raise RuntimeError("boom")
    assert db.group(GID) is None and db.events_after(0) == []


def test_group_counts_and_listing(index_store: IndexStore) -> None:
    db = index_store
    g = _group_with(db, range(3))
    assert (g.n_subbands, g.min_ts, g.max_ts, g.state) == (3, T0, T0 + 2, "collecting")
    assert [s.group_id for s in db.groups_near(T0 + 3, 1.5)] == [GID]
    assert db.groups_near(T0 + 10, 1.5) == []
    assert [m.subband_num for m in db.files_of_groups([GID, "none"])[GID]] == [0, 1, 2]
    assert db.groups_overlapping(60950.001, 60950.002)[0].group_id == GID
    with db.transaction("complete"):
        db.lock_time_window(T0, 2.0)  # a hook every backend accepts inside a transaction
        db.set_group_state(GID, "complete", T0 + 9)
        db.enqueue_job(GID, 60950.0, T0 + 9)
    (s,) = db.list_groups(None, None, "pending")
    assert (s.state, s.convert_state, s.completed_at) == ("complete", "pending", T0 + 9)
    counts = db.counts()
    assert counts.files == {"indexed": 3, "rejected": 0}
    assert counts.groups == {"complete": 1} and counts.conversions == {"pending": 1}
    assert db.state_counts() == ({"complete": 1}, {"pending": 1})


def test_jobs_are_claimed_once_and_fenced(index_store: IndexStore) -> None:
    db = index_store
    _group_with(db, range(16))
    with db.transaction("queue"):
        db.enqueue_job(GID, 60950.0, T0)
    a = db.claim_job("a", T0 + 10, 60, newest_first=False)
    assert a is not None and (a.state, a.lease_owner, a.attempts) == ("running", "a", 1)
    assert db.claim_job("b", T0 + 11, 60, newest_first=False) is None  # lease is live
    b = db.claim_job("b", T0 + 100, 60, newest_first=False)  # lease expired: taken over
    assert b is not None and b.attempt_token != a.attempt_token
    with db.transaction("a finishes late"):
        assert not db.finish_job(GID, "a", "converted", T0 + 101, token=a.attempt_token or "")
    with db.transaction("b finishes"):
        assert db.finish_job(
            GID, "b", "converted", T0 + 102, ms_path="/ms/x.ms", token=b.attempt_token or ""
        )
    done = db.job(GID)
    assert done is not None and (done.state, done.ms_path, done.lease_owner) == (
        "converted",
        "/ms/x.ms",
        None,
    )
    assert db.jobs_open() == 0


def test_a_lapsed_job_past_max_attempts_is_not_claimed_but_failed_once(
    index_store: IndexStore,
) -> None:
    db = index_store
    _group_with(db, range(16))
    with db.transaction("queue"):
        db.enqueue_job(GID, 60950.0, T0)
    a = db.claim_job("a", T0 + 10, 60, False, max_attempts=2)
    b = db.claim_job("b", T0 + 100, 60, False, max_attempts=2)  # a's lease lapsed
    assert a is not None and b is not None and b.attempts == 2
    assert db.lapsed_jobs(T0 + 150, 2) == []  # b's lease is live
    # b's lease lapses too: a third claim would exceed max_attempts
    assert db.claim_job("c", T0 + 200, 60, False, max_attempts=2) is None
    (lapsed,) = db.lapsed_jobs(T0 + 200, 2)
    assert (lapsed.lease_owner, lapsed.attempt_token) == ("b", b.attempt_token)
    assert db.renew_lease(GID, "b", T0 + 400)  # b was only late: it renews
    with db.transaction("fail"):
        assert not db.fail_lapsed_job(GID, b.attempt_token or "", T0 + 200, "lost")
    with db.transaction("fail"):
        assert db.fail_lapsed_job(GID, b.attempt_token or "", T0 + 500, "lost twice")
    with db.transaction("fail again"):  # another node, a moment later: nothing to do
        assert not db.fail_lapsed_job(GID, b.attempt_token or "", T0 + 501, "lost twice")
    job = db.job(GID)
    assert job is not None
    assert (job.state, job.attempts, job.last_error, job.lease_owner) == (
        "failed",
        2,
        "lost twice",
        None,
    )
    assert db.lapsed_jobs(T0 + 600, 2) == [] and db.claim_job("c", T0 + 600, 60, False) is None
    assert db.retry_failed_job(GID, T0 + 700)
    again = db.claim_job("c", T0 + 701, 60, False, max_attempts=2)
    assert again is not None and again.attempts == 1


def test_event_ids_only_grow(index_store: IndexStore) -> None:
    db = index_store
    with db.transaction("events"):
        first = db.add_event("group.complete", GID, {"files": ["a"]}, T0)
    assert db.raise_event_id_floor(100)
    assert not db.raise_event_id_floor(50)
    with db.transaction("more"):
        second = db.add_event("group.converted", GID, {}, T0 + 1)
    assert second > 100 > first and db.event_id_high() == second
    assert [(e.id, e.payload) for e in db.events_after(0)] == [
        (first, {"files": ["a"]}),
        (second, {}),
    ]
    assert db.count_events("group.complete") == 1 and db.count_events() == 2
    t = time.monotonic()
    db.wait_for_events(second, 0.05)
    assert time.monotonic() - t < 30  # returns (no hang) when nothing new comes


def test_locations_and_heartbeats_are_per_node(index_store: IndexStore) -> None:
    db = index_store
    a = db.ensure_location("incoming", "/data/a", "incoming", node="node-a")
    b = db.ensure_location("other", "/data/b", "incoming", node="node-b")
    assert db.ensure_location("incoming", "/data/a2", "incoming", node="node-a") == a  # moved
    assert [loc.id for loc in db.locations(node="node-a")] == [a]
    assert [loc.path for loc in db.locations()] == ["/data/a2", "/data/b"] and a != b
    db.write_heartbeat("node-a", 1, "host-a", T0, T0 + 1, {"ok": True})
    db.write_heartbeat("node-b", 2, "host-b", T0, T0 + 2, {})
    db.write_heartbeat("node-a", 3, "host-a", T0, T0 + 3, {"ok": False})
    hb = db.heartbeat("node-a")
    assert hb is not None and (hb.pid, hb.updated_at, hb.status) == (3, T0 + 3, {"ok": False})
    assert [h.node for h in db.heartbeats()] == ["node-a", "node-b"]
    assert db.heartbeat("node-c") is None
    assert db.try_lock_node("node-a")
    db.unlock_node("node-a")


def test_rejections_count_attempts(index_store: IndexStore) -> None:
    db = index_store
    for now in (T0, T0 + 5):
        with db.transaction("reject"):
            db.reject("/data/bad.hdf5", "unreadable", "truncated", 10, 20, None, now)
    (r,) = db.rejected()
    assert (r.attempts, r.first_seen_at, r.last_seen_at) == (2, T0, T0 + 5)
    assert set(db.known_rejected()) == {"/data/bad.hdf5"}
    with db.transaction("unreject"):
        db.unreject("/data/bad.hdf5")
    assert db.rejected() == []
