"""A member of a group leaves the disk while another file claims its subband: that file
takes the slot (operator2 D1), on both store backends, through the live deletion and the
reconcile alike; completion stays exactly once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dsa110_ingest.convert.request import build_request
from dsa110_ingest.db import IndexStore
from dsa110_ingest.errors import ConversionError
from dsa110_ingest.ingest.indexer import Indexer

from ..conftest import Site

pytestmark = pytest.mark.store_backends


def _later(p: Path, seconds: int = 1) -> str:
    """The same subband under a name ``seconds`` later (a node writing it again)."""
    return p.name[:17] + f"{int(p.name[17:19]) + seconds:02d}" + p.name[19:]


def _sb(files: list[Path], n: int) -> Path:
    return next(f for f in files if f.name.endswith(f"_sb{n:02d}.hdf5"))


def _setup(site: Site, sim_groups, aside: tuple[int, ...]) -> tuple[IndexStore, Indexer, dict]:
    """One group indexed with a wrong sb04 kept, the real sb04 then found as its conflict;
    the subbands in ``aside`` are held back."""
    files = sim_groups(site.incoming, n=1)
    hold = site.root / "aside"
    hold.mkdir()
    real = _sb(files, 4)
    wrong = site.incoming / _later(real)
    shutil.copy(real, wrong)
    for n in (4, *aside):
        shutil.move(_sb(files, n), hold / _sb(files, n).name)
    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    idx.reconcile()
    shutil.move(hold / real.name, real)
    r = idx.reconcile()
    assert r.indexed == 1 and [e[0] for e in r.events] == ["group.conflict"]
    (g,) = db.list_groups(None, None, None)
    paths = {"real": str(real), "wrong": str(wrong), "hold": hold, "gid": g.group_id}
    real_row = db.get_file(str(real))
    assert real_row is not None and real_row.conflict
    return db, idx, paths


@pytest.mark.parametrize("how", ["deleted event", "reconcile"])
def test_a_conflict_on_disk_takes_the_slot_of_the_member_that_left(
    site: Site, sim_groups, how: str
) -> None:
    db, idx, p = _setup(site, sim_groups, aside=())
    gid = p["gid"]
    assert db.count_events("group.complete") == 1  # completed with the wrong sb04
    os.remove(p["wrong"])
    r = idx.mark_missing([p["wrong"]]) if how == "deleted event" else idx.reconcile()
    assert r.missing == 1
    row = db.get_file(p["real"])
    assert row is not None and not row.conflict and not row.missing
    g = db.group(gid)
    assert g is not None and (g.state, g.n_subbands, g.n_conflicts) == ("complete", 16, 0)
    assert db.count_events("group.complete") == 1  # never a second time
    req = build_request(site.cfg, db, gid)
    assert p["real"] in [f.path for f in req.inputs] and not req.partial
    db.close()


def test_the_member_that_left_comes_back_as_the_conflict(site: Site, sim_groups) -> None:
    """A: the kept sb04 leaves (an unmounted disk, a move), B takes its slot, A returns:
    A is the conflict now, so sb04 never has two members and the group converts once."""
    db, idx, p = _setup(site, sim_groups, aside=())
    gid = p["gid"]
    os.rename(p["wrong"], p["hold"] / "away.hdf5")
    idx.reconcile()
    assert not db.get_file(p["real"]).conflict  # type: ignore[union-attr]
    os.rename(p["hold"] / "away.hdf5", p["wrong"])
    r = idx.reconcile()
    assert ("group.conflict", gid) in r.events
    back = db.get_file(p["wrong"])
    assert back is not None and back.conflict and not back.missing
    sb04 = [f.path for f in db.group_files(gid) if f.subband_num == 4]
    assert sb04 == [p["real"]]
    g = db.group(gid)
    assert g is not None and (g.state, g.n_subbands) == ("complete", 16)
    assert db.count_events("group.complete") == 1
    req = build_request(site.cfg, db, gid)
    assert sorted(f.path for f in req.inputs if f.path.endswith("_sb04.hdf5")) == [p["real"]]
    db.close()


def test_a_collecting_group_completes_once_after_the_slot_is_filled(site: Site, sim_groups) -> None:
    db, idx, p = _setup(site, sim_groups, aside=(5,))
    gid = p["gid"]
    os.remove(p["wrong"])
    r = idx.mark_missing([p["wrong"]])
    assert r.events == []
    g = db.group(gid)
    assert g is not None and (g.state, g.n_subbands) == ("collecting", 15)
    sb05 = next(p["hold"].iterdir())
    shutil.move(sb05, site.incoming / sb05.name)
    r = idx.reconcile()
    assert [e for e in r.events if e[0] == "group.complete"] == [("group.complete", gid)]
    assert db.count_events("group.complete") == 1
    assert p["real"] in [f.path for f in db.group_files(gid)]
    db.close()


def test_a_member_removed_with_no_other_file_names_both_ways_out(site: Site, sim_groups) -> None:
    db, idx, p = _setup(site, sim_groups, aside=())
    gid = p["gid"]
    os.remove(p["wrong"])
    os.remove(p["real"])
    idx.reconcile()
    with pytest.raises(ConversionError) as e:
        build_request(site.cfg, db, gid)
    msg = str(e.value)
    assert f"dsa110-ingest retry {gid}" in msg and f"convert --force {gid}" in msg
    assert "restore them" not in msg
    req = build_request(site.cfg, db, gid, force=True)  # converted without sb04
    assert req.partial and req.missing_subbands == ("sb04",)
    db.close()
