"""The writes that end an attempt, on real SQLite files: a given-up attempt never
registers its result, an attempt lost by the executor does not count, a counted failure
waits the conversion backoff."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from dsa110_ingest.convert.backoff import Backoff
from dsa110_ingest.convert.recorder import Recorder
from dsa110_ingest.convert.request import build_request
from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.errors import PermanentConversionError

from ..conftest import db_count
from .conftest import claim, indexed_site


def test_a_given_up_attempt_never_registers_its_late_result(
    tmp_path: Path, ok_script: Path
) -> None:
    site = indexed_site(tmp_path, ok_script)
    cfg = site.cfg
    t0 = time.time()
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, old = claim(db, "daemon-a", t0)
        # daemon-a stalls past its lease; daemon-b takes the group over
        gid_b, new = claim(db, "daemon-b", t0 + 10)
        assert gid_b == gid and new != old and new and old
        base = build_request(cfg, db, gid)
        result = {"ms_path": base.output, "n_channels": base.n_channels}
        rec = Recorder(cfg, db, products, clock=lambda: t0 + 11)
        late = rec.success(replace(base, token=old), result, "daemon-a")
        assert late is False
        assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 0
        assert db.job(gid).lease_owner == "daemon-b"
        # even under the owner that holds the lease, a stale token is refused
        assert not rec.success(replace(base, token=old), result, None)
        assert rec.success(replace(base, token=new), result, "daemon-b")
        assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 1
        assert db.job(gid).state == "converted"


def test_an_attempt_lost_by_the_executor_does_not_count(tmp_path: Path, ok_script: Path) -> None:
    site = indexed_site(tmp_path, ok_script, "max_attempts = 1\n")
    cfg = site.cfg
    t0 = time.time()
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, token = claim(db, "daemon-a", t0)
        req = build_request(cfg, db, gid)
        req = replace(req, token=token)
        Recorder(cfg, db, products, clock=lambda: t0).transient(req, "daemon-a", "worker lost")
        job = db.job(gid)
        assert (job.state, job.attempts, job.last_error) == ("pending", 0, "worker lost")
        assert job.next_attempt_at == pytest.approx(t0 + cfg.convert.backoff_initial_seconds)
        # max_attempts = 1, yet the group is not failed: the next attempt is claimable
        assert db.claim_job("daemon-a", t0 + 1, 3.0, False) is not None


def test_counted_failures_wait_the_backoff_then_fail_at_max_attempts(
    tmp_path: Path, ok_script: Path
) -> None:
    site = indexed_site(tmp_path, ok_script, "max_attempts = 4\n")
    cfg = site.cfg
    t0 = time.time()
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        rec = Recorder(cfg, db, products, clock=lambda: t0)
        waits = []
        for n in (1, 2, 3, 4):
            gid, _ = claim(db, "daemon-a", t0 + 10 * n)
            outcome = rec.failure(gid, "daemon-a", f"converter exited with status {n}")
            job = db.job(gid)
            assert job.attempts == n and f"status {n}" in job.last_error
            if n < 4:
                assert (outcome, job.state) == ("retry", "pending")
                waits.append(job.next_attempt_at - t0)
        # backoff_initial_seconds (0.2), doubling, capped at backoff_max_seconds (0.5)
        assert waits == pytest.approx([0.2, 0.4, 0.5])
        assert (outcome, db.job(gid).state) == ("failed", "failed")
        events = [e.type for e in db.events_after(0, 100)]
        assert events.count("group.failed") == 1


def test_a_permanent_failure_ends_the_group_at_the_first_attempt(
    tmp_path: Path, ok_script: Path
) -> None:
    site = indexed_site(tmp_path, ok_script, "max_attempts = 5\n")
    cfg = site.cfg
    with open_index_at(cfg.hdf5_db) as db, open_products_at(cfg.products_db) as products:
        gid, _ = claim(db, "daemon-a", time.time())
        rec = Recorder(cfg, db, products)
        assert rec.failure(gid, "daemon-a", PermanentConversionError("sb03 is bad")) == "failed"
        assert (db.job(gid).state, db.job(gid).attempts) == ("failed", 1)


def test_the_backoff_doubles_from_initial_up_to_maximum() -> None:
    b = Backoff(30.0, 3600.0)
    assert [b.delay(n) for n in range(10)] == [30, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert b.delay(10_000) == 3600.0  # no overflow after a very long outage
    assert Backoff(0.0, 10.0).delay(5) == 0.0
