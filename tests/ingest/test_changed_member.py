"""A member of a converted (or converting) group replaced by other data (operator2 D5):
a warning, a ``group.conflict`` event (reason ``member_changed``) and the job flagged
stale in its ``last_error`` (what `groups` and `status` show); never reconverted by
itself. The same bytes rewritten, or a group not converted yet, say nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dsa110_ingest.db import IndexStore
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.tools.simulate import SimParams, plan_groups, write_file

from ..conftest import SMALL, Site

pytestmark = pytest.mark.store_backends

OTHER = SimParams(nants=4, nchan=2, ntimes=3)  # other data: one more integration


def _group(site: Site) -> tuple[IndexStore, Indexer, str, dict[int, Path], object]:
    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 3)
    files = {
        sb: write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
        for sb, t in sorted(plan.files.items())
    }
    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    idx.reconcile()
    (g,) = db.list_groups(None, None, None)
    return db, idx, g.group_id, files, plan


def _replace(site: Site, plan, sb: int, params: SimParams) -> Path:
    """Write the subband again elsewhere and rename it over the member (atomic)."""
    spare = site.root / "spare"
    spare.mkdir(exist_ok=True)
    new = write_file(spare, plan.files[sb], sb, params, obs_start_unix=plan.start_unix)
    dst = site.incoming / new.name
    os.replace(new, dst)
    return dst


def _mark(db: IndexStore, gid: str, state: str) -> None:
    now = time.time()
    with db.transaction("test: the group's conversion"):
        db.enqueue_job(gid, None, now)
        if state == "converted":
            db.finish_job(gid, None, "converted", now, ms_path="/data/ms/x.ms")


@pytest.mark.parametrize("state", ["converted", "pending"])
def test_a_member_replaced_by_other_data_after_conversion_is_flagged(
    site: Site, state: str
) -> None:
    db, idx, gid, _files, plan = _group(site)
    _mark(db, gid, state)
    path = _replace(site, plan, 3, OTHER)
    r = idx.index_paths([str(path)])
    assert r.updated == 1
    job = db.job(gid)
    assert job is not None
    if state == "pending":  # converted later, from what is on disk then: nothing to say
        assert r.events == [] and job.last_error is None
        return
    assert r.events == [("group.conflict", gid)]
    assert job.state == "converted"  # not reconverted by itself
    assert job.last_error is not None and job.last_error.startswith("stale: sb03")
    assert f"convert --force {gid}" in job.last_error
    (e,) = [e for e in db.events_after(0, 1000) if e.type == "group.conflict"]
    assert e.payload["reason"] == "member_changed" and e.payload["path"] == str(path)
    db.close()


def test_the_same_bytes_rewritten_say_nothing(site: Site) -> None:
    db, idx, gid, _files, plan = _group(site)
    _mark(db, gid, "converted")
    path = _replace(site, plan, 3, SMALL)  # the same data written again: a new mtime
    r = idx.index_paths([str(path)])
    assert r.updated == 1 and r.events == []
    job = db.job(gid)
    assert job is not None and job.last_error is None
    db.close()


@pytest.mark.parametrize("state", ["converted", "running", "pending"])
def test_an_heir_taking_the_slot_after_conversion_is_flagged(
    site: Site, sim_groups, state: str
) -> None:
    """The member of a converted group leaves and a conflict on disk takes its slot
    (``file.took_slot``): the MS holds the file that left, as in D5."""
    from .test_vacated import _setup

    db, idx, p = _setup(site, sim_groups, aside=())
    gid = p["gid"]
    now = time.time()
    _mark(db, gid, "converted" if state == "converted" else "pending")
    if state == "running":
        assert db.claim_job("test-owner", now, 60.0, False) is not None
    job = db.job(gid)
    assert job is not None and job.state == state
    os.remove(p["wrong"])
    r = idx.mark_missing([p["wrong"]])
    assert r.missing == 1
    row = db.get_file(p["real"])
    assert row is not None and not row.conflict  # the heir took the slot
    job = db.job(gid)
    assert job is not None
    conflicts = [e for e in db.events_after(0, 1000) if e.type == "group.conflict"]
    if state == "pending":  # converted later, from what is on disk then
        assert job.last_error is None and ("group.conflict", gid) not in r.events
        assert all(e.payload.get("reason") != "member_changed" for e in conflicts)
        return
    assert ("group.conflict", gid) in r.events
    assert job.state == state  # not reconverted by itself
    assert job.last_error is not None and job.last_error.startswith("stale: sb04")
    assert p["wrong"] in job.last_error and f"convert --force {gid}" in job.last_error
    (e,) = [e for e in conflicts if e.payload.get("reason") == "member_changed"]
    assert e.payload["path"] == p["real"] and e.payload["replaces"] == p["wrong"]
    assert e.payload["conversion"] == state
    db.close()
