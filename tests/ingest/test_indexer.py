"""Indexing real simulated files into a real DB: idempotence, conflicts, rejections,
moves, deletions, timeouts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest

from dsa110_ingest.db import IndexStore
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.times import iso_to_unix

from ..conftest import SMALL, Site, write_file, write_site

# every `site` test here runs on each store backend (tests/conftest.py)
pytestmark = pytest.mark.store_backends


def _indexer(
    site: Site, clock: Callable[[], float] | None = None, mono: Callable[[], float] | None = None
) -> tuple[IndexStore, Indexer]:
    db = site.db()
    kw = {k: v for k, v in (("clock", clock), ("mono", mono)) if v is not None}
    idx = Indexer(db, site.cfg, **kw)
    idx.register_locations()
    return db, idx


def test_backfill_indexes_groups_and_reindexing_changes_nothing(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=3)
    db, idx = _indexer(site)
    r = idx.reconcile()
    assert (r.indexed, r.rejected) == (48, 0)
    assert [e for e in r.events if e[0] == "group.complete"] == [
        ("group.complete", gid) for gid in [g.group_id for g in db.list_groups(None, None, None)]
    ]
    before = (db.count_events(), len(db.all_paths()))
    r2 = idx.reconcile()
    assert (r2.indexed, r2.unchanged, r2.events) == (0, 48, [])
    assert (
        db.count_events(),
        len(db.all_paths()),
    ) == before
    row = db.get_file(sorted(db.all_paths())[0])
    assert row is not None
    assert row.subband_code == f"sb{row.subband_num:02d}" and row.n_ants == SMALL.nants
    assert row.freq_min_hz < row.freq_max_hz and row.dec_deg == pytest.approx(55.0)
    assert row.storage_location_id is not None and row.stored == 1


def test_group_completes_once_with_its_16th_file(site: Site) -> None:
    from dsa110_ingest.tools.simulate import plan_groups

    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 3)
    db, idx = _indexer(site)
    for i, (sb, t) in enumerate(sorted(plan.files.items())):
        p = write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
        r = idx.index_paths([str(p)])
        assert r.indexed == 1
        assert [e[0] for e in r.events] == (["group.complete"] if i == 15 else [])
    (g,) = db.list_groups(None, None, None)
    assert (g.state, g.n_subbands) == ("complete", 16)
    assert db.job(g.group_id) is None  # conversion is disabled in this site


def test_files_reported_together_are_committed_one_by_one(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the live path: a file's row is visible as soon as its header is read, not after the
    # reads of the files that arrived with it
    from dsa110_ingest.tools.simulate import plan_groups

    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 3)
    db, idx = _indexer(site)
    paths = [
        str(write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix))
        for sb, t in sorted(plan.files.items())
    ]
    other = site.db()  # a consumer's own connection
    visible_at_each_start: list[int] = []
    tx = db.transaction

    def spy(doing: str = "writing"):  # type: ignore[no-untyped-def]
        if doing.startswith("indexing"):
            visible_at_each_start.append(len(other.all_paths()))
        return tx(doing)

    monkeypatch.setattr(db, "transaction", spy)
    try:
        r = idx.index_paths(paths)
    finally:
        other.close()
    assert r.indexed == 16 and [e[0] for e in r.events] == ["group.complete"]
    assert visible_at_each_start == list(range(16))


def test_duplicate_subband_is_a_recorded_conflict(site: Site, sim_groups) -> None:
    files = sim_groups(site.incoming, n=1)
    db, idx = _indexer(site)
    idx.reconcile()
    # the same subband again, written a second later by a confused node
    dup = site.incoming / (
        files[3].name[:17] + f"{int(files[3].name[17:19]) + 1:02d}" + files[3].name[19:]
    )
    shutil.copy(files[3], dup)
    r = idx.reconcile()
    assert (
        r.indexed == 1
        and ("group.conflict", db.list_groups(None, None, None)[0].group_id) in r.events
    )
    (g,) = db.list_groups(None, None, None)
    assert (g.n_subbands, g.n_conflicts, g.state) == (16, 1, "complete")
    assert db.count_events("group.complete") == 1


def test_rejected_files_are_kept_with_a_reason_and_retried_when_they_change(
    site: Site, sim_groups
) -> None:
    sim_groups(site.incoming, n=1)
    bad = site.incoming / "2025-10-02T00:20:00_sb01.hdf5"
    bad.write_bytes(b"garbage")
    (site.incoming / "weird_name.hdf5").write_bytes(b"x")
    db, idx = _indexer(site)
    r = idx.reconcile()
    assert r.indexed == 16 and r.rejected == 2
    reasons = {row.path: row.reason for row in db.rejected()}
    assert reasons == {str(bad): "not_hdf5", str(site.incoming / "weird_name.hdf5"): "misnamed"}
    assert idx.reconcile().rejected == 0  # unchanged: not read again
    write_file(site.incoming, iso_to_unix("2025-10-02T00:20:00"), 1, SMALL)
    r = idx.reconcile()
    assert r.indexed == 1 and str(bad) not in {row.path for row in db.rejected()}


def test_name_far_from_header_time_is_rejected(site: Site) -> None:
    p = write_file(site.incoming, iso_to_unix("2025-10-02T00:00:00"), 2, SMALL)
    p.rename(site.incoming / "2025-10-03T00:00:00_sb02.hdf5")
    _db, idx = _indexer(site)
    r = idx.reconcile()
    assert r.rejected == 1 and "from the header's first integration" in r.rejections[0][1]


def test_deleted_file_is_kept_with_stored_0(site: Site, sim_groups) -> None:
    files = sim_groups(site.incoming, n=1)
    db, idx = _indexer(site)
    idx.reconcile()
    files[0].unlink()
    assert idx.reconcile().missing == 1
    assert db.get_file(str(files[0])).stored == 0
    assert db.count_events("group.complete") == 1


def test_a_member_deleted_before_its_group_completes_no_longer_counts(site: Site) -> None:
    """sb05 deleted while its group collects: the 16th arrival does not complete the
    group (its event would name a file that is gone); sb05 back on disk completes it,
    once."""
    from dsa110_ingest.tools.simulate import plan_groups

    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 3)
    db, idx = _indexer(site)
    paths = {
        sb: write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
        for sb, t in sorted(plan.files.items())
    }
    aside = site.root / "aside"
    aside.mkdir()
    last = aside / paths[3].name
    shutil.move(paths.pop(3), last)
    for p in paths.values():
        idx.index_paths([str(p)])
    kept = aside / paths[5].name
    shutil.move(paths[5], kept)
    assert idx.reconcile().missing == 1
    (g,) = db.list_groups(None, None, None)
    assert (g.state, g.n_subbands) == ("collecting", 14)
    shutil.move(last, site.incoming / last.name)
    r = idx.index_paths([str(site.incoming / last.name)])
    assert r.indexed == 1 and r.events == []
    (g,) = db.list_groups(None, None, None)
    assert (g.state, g.n_subbands) == ("collecting", 15)
    shutil.move(kept, paths[5])
    r = idx.index_paths([str(paths[5])])
    assert [e[0] for e in r.events] == ["group.complete"]
    (g,) = db.list_groups(None, None, None)
    assert (g.state, g.n_subbands) == ("complete", 16)
    # gone again after completion: the complete group keeps its count and its one event
    paths[5].unlink()
    assert idx.reconcile().missing == 1
    (g,) = db.list_groups(None, None, None)
    assert (g.state, g.n_subbands, db.count_events("group.complete")) == ("complete", 16, 1)


def test_moved_between_locations_updates_the_row_not_a_new_one(tmp_path: Path, sim_groups) -> None:
    site = write_site(tmp_path, extra_locations=("archive",))
    files = sim_groups(site.incoming, n=1)
    db, idx = _indexer(site)
    idx.reconcile()
    dest = site.extra["archive"] / files[5].name
    shutil.move(files[5], dest)
    r = idx.reconcile()
    assert (r.moved, r.indexed) == (1, 0)
    assert db.get_file(str(files[5])) is None
    row = db.get_file(str(dest))
    assert row.stored == 1 and row.storage_location_id == idx.locations[1][0]
    assert len(db.all_paths()) == 16
    assert db.count_events() == 1


def test_incomplete_group_times_out_once_and_completes_later(site: Site, sim_groups) -> None:
    files = sim_groups(site.incoming, n=1, missing=(7,))
    wall, mono = [1000.0], [50.0]
    db, idx = _indexer(site, clock=lambda: wall[0], mono=lambda: mono[0])
    idx.reconcile()
    assert idx.expire_groups() == []
    timeout = site.cfg.groups.incomplete_timeout_seconds
    mono[0] += timeout + 1
    wall[0] += timeout + 1
    (ev,) = idx.expire_groups()
    assert ev[0] == "group.incomplete" and idx.expire_groups() == []
    inc = [e for e in db.events_after(0) if e.type == "group.incomplete"]
    assert inc[0].payload["missing"] == ["sb07"]
    from dsa110_ingest.tools.simulate import plan_groups

    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0, missing=())
    write_file(site.incoming, plan.files[7], 7, SMALL, obs_start_unix=plan.start_unix)
    r = idx.reconcile()
    assert ("group.complete", inc[0].group_id) in r.events
    assert len(files) == 15


@pytest.mark.parametrize("jump", [86400.0, -86400.0, 3 * 3600.0, -600.0])
def test_wall_clock_jumps_neither_expire_early_nor_never(
    site: Site, sim_groups, jump: float
) -> None:
    """Timeouts run on a monotonic clock: a wall-clock jump (NTP step, VM resume, an
    operator's `date -s`) moves neither way."""
    sim_groups(site.incoming, n=1, missing=(3,))
    wall, mono = [1.0e9], [100.0]
    _db, idx = _indexer(site, clock=lambda: wall[0], mono=lambda: mono[0])
    idx.reconcile()
    timeout = site.cfg.groups.incomplete_timeout_seconds
    wall[0] += jump  # the jump
    mono[0] += timeout - 1
    assert idx.expire_groups() == []  # not early
    mono[0] += 2
    assert [e[0] for e in idx.expire_groups()] == ["group.incomplete"]  # and not never
    assert idx.expire_groups() == []


def test_after_a_restart_waited_wall_time_counts_once(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=1, missing=(3,))
    wall = [1.0e9]
    _db, idx = _indexer(site, clock=lambda: wall[0], mono=lambda: 0.0)
    idx.reconcile()
    timeout = site.cfg.groups.incomplete_timeout_seconds
    wall[0] += timeout - 10  # the daemon was down for most of the timeout
    mono = [7.0]
    _, idx2 = _indexer(site, clock=lambda: wall[0], mono=lambda: mono[0])
    assert idx2.expire_groups() == []
    mono[0] += 11
    assert [e[0] for e in idx2.expire_groups()] == ["group.incomplete"]


def test_full_rescan_expires_old_incomplete_groups_at_once(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=2, missing=(0,))
    _db, idx = _indexer(site)
    r = idx.reconcile(obs_expiry=True)
    assert sorted(e[0] for e in r.events) == ["group.incomplete", "group.incomplete"]


def test_symlink_out_of_every_location_is_not_followed(
    site: Site, tmp_path: Path, sim_groups
) -> None:
    outside = tmp_path / "outside"
    files = sim_groups(outside, n=1)
    os.symlink(files[0], site.incoming / files[0].name)
    db, idx = _indexer(site)
    r = idx.reconcile()
    assert r.indexed == 0 and r.rejected == 1
    assert db.rejected()[0].reason == "symlink_outside"


def test_rewritten_file_updates_its_row_without_new_events(site: Site, sim_groups) -> None:
    files = sim_groups(site.incoming, n=1)
    _db, idx = _indexer(site)
    idx.reconcile()
    with h5py.File(files[2], "r+") as f:
        f["Header/history"][()] = b"touched"
    r = idx.reconcile()
    assert (r.updated, r.indexed, r.events) == (1, 0, [])


# -- issue 9: overlapping frequencies, names, hostile structures; issue 10: paths --------
def _group_files(out: Path, start: str = "2025-10-02T00:00:00") -> dict[int, Path]:
    from dsa110_ingest.tools.simulate import plan_groups

    (plan,) = plan_groups(1, start, 2.0)
    out.mkdir(parents=True, exist_ok=True)
    return {
        sb: write_file(out, t, sb, SMALL, obs_start_unix=plan.start_unix)
        for sb, t in plan.files.items()
    }


def _conflicts(db: IndexStore) -> list[dict]:
    return [e.payload for e in db.events_after(0, 10_000) if e.type == "group.conflict"]


@pytest.mark.parametrize("impostor_first", [False, True])
def test_one_subbands_data_under_another_name_is_a_conflict_never_a_group(
    site: Site, tmp_path: Path, impostor_first: bool
) -> None:
    files = _group_files(tmp_path / "src")
    real_sb01 = files[1]
    fake = site.incoming / real_sb01.name
    shutil.copy(files[0], fake)  # sb00's data (and frequencies) named sb01
    db, idx = _indexer(site)
    order = [fake, files[0]] if impostor_first else [files[0], fake]
    rest = [f for sb, f in files.items() if sb not in (0, 1)]
    for f in [*rest[:3], *order, *rest[3:]]:  # live arrivals, one at a time
        dst = site.incoming / f.name
        if f != fake:
            shutil.copy(f, dst)
        idx.index_paths([str(dst)])
    gid = db.list_groups(None, None, None)[0].group_id
    assert db.group(gid).state != "complete" and db.count_events("group.complete") == 0
    c = [x for x in _conflicts(db) if x.get("reason") == "overlapping_frequencies"]
    assert c and c[-1]["path"] == str(fake)  # the file off its band is the suspect
    assert str(fake) in c[0]["paths"] and str(site.incoming / files[0].name) in c[0]["paths"]
    assert db.get_file(str(fake)).is_duplicate == 1
    assert db.get_file(str(site.incoming / files[0].name)).is_duplicate == 0
    # resolved: the impostor replaced by the real sb01 -> complete, exactly once
    fake.unlink()
    idx.reconcile()
    shutil.copy(real_sb01, fake)
    idx.index_paths([str(fake)])
    assert db.group(gid).state == "complete" and db.count_events("group.complete") == 1
    assert {f.freq_min_hz for f in db.group_files(gid)}.__len__() == 16
    idx.close()
    db.close()


def test_a_name_that_is_not_utf8_is_rejected_and_the_rest_indexed(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=1)
    raw = os.fsencode(site.incoming) + b"/\xff\xfe2025-10-02T00:00:01_sb00.hdf5"
    with open(raw, "wb") as f:
        f.write(b"x")
    db, idx = _indexer(site)
    r = idx.reconcile()
    assert (r.indexed, r.rejected) == (16, 1)
    (row,) = db.rejected()
    assert row.reason == "misnamed" and bytes(row.path_bytes) == raw
    assert "\\xff\\xfe2025" in row.path  # printable, and says which bytes
    r2 = idx.reconcile()  # known: not tried again every reconcile
    assert (r2.rejected, db.rejected()[0].attempts) == (0, 1)
    idx.index_paths([os.fsdecode(raw)])  # a watcher event for it is harmless too
    idx.close()
    db.close()


def test_a_location_spelled_with_dotdot_or_a_symlink_is_one_set_of_rows(
    tmp_path: Path, sim_groups
) -> None:
    site = write_site(tmp_path)
    sim_groups(site.incoming, n=1)
    db, idx = _indexer(site)
    assert idx.reconcile().indexed == 16
    idx.close()
    # the same folder through `..` and through a symlinked parent
    (tmp_path / "cli").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    for spelled in (tmp_path / "cli" / ".." / "incoming", tmp_path / "alias" / "incoming"):
        from dsa110_ingest.api import index_hdf5_files

        r = index_hdf5_files(spelled, config=site.cfg)
        assert (r.indexed, r.moved) == (0, 0), spelled
    rows = [db.get_file(p) for p in db.all_paths()]
    n = (len(rows), len({r.storage_location_id for r in rows if r is not None}))
    assert n == (16, 1)  # no duplicate rows, still the configured location
    assert _conflicts(db) == []
    db.close()


def test_an_adhoc_folder_inside_a_location_is_indexed_as_part_of_it(
    tmp_path: Path, sim_groups
) -> None:
    from dsa110_ingest.api import index_hdf5_files

    site = write_site(tmp_path)
    sub = site.incoming / "night1"
    sim_groups(sub, n=1)
    r = index_hdf5_files(sub, config=site.cfg)
    assert r.indexed == 16
    db = site.db()
    locs = {row.id: row.name for row in db.locations()}
    ids = {f.storage_location_id for f in map(db.get_file, db.all_paths()) if f is not None}
    assert [locs[i] for i in ids] == ["incoming"]
    db.close()


def test_hostile_structures_in_a_backfill_are_rejected_and_harm_nothing(
    site: Site, sim_groups, tmp_path: Path
) -> None:
    from .. import hostile

    sim_groups(site.incoming, n=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    want = {}
    for i, (_kind, make) in enumerate(sorted(hostile.MAKERS.items())):
        p = write_file(site.incoming, iso_to_unix("2025-10-02T05:00:00") + 1000 * i, 3, SMALL)
        want[str(p)] = make(p, i, elsewhere)
    db, idx = _indexer(site)
    r = idx.reconcile()
    assert r.indexed == 16 and db.count_events("group.complete") == 1
    assert {row.path: row.reason for row in db.rejected()} == want
    idx.close()
    db.close()
