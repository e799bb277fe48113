"""Entries named like subband files that are not regular files (a FIFO, symlink loops, a
dangling link, a directory) are rejected by name with what they are, never opened, never
silently skipped (operator2 D8): by the scan and by the live path alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsa110_ingest.ingest.indexer import Indexer

from ..conftest import Site


def _odd_entries(folder: Path) -> dict[str, str]:
    """Name -> what the rejection must call it."""
    os.mkfifo(folder / "2025-11-01T00:20:00_sb00.hdf5")
    os.symlink("2025-11-01T00:20:00_sb01.hdf5", folder / "2025-11-01T00:20:00_sb01.hdf5")
    os.symlink("loopB.hdf5", folder / "loopA.hdf5")
    os.symlink("loopA.hdf5", folder / "loopB.hdf5")
    os.symlink("nowhere.bin", folder / "2025-11-01T00:21:00_sb03.hdf5")
    (folder / "2025-11-01T00:22:00_sb02.hdf5").mkdir()
    return {
        "2025-11-01T00:20:00_sb00.hdf5": "a FIFO",
        "2025-11-01T00:20:00_sb01.hdf5": "a symlink loop",
        "loopA.hdf5": "a symlink loop",
        "loopB.hdf5": "a symlink loop",
        "2025-11-01T00:21:00_sb03.hdf5": "a dangling symlink",
        "2025-11-01T00:22:00_sb02.hdf5": "a directory",
    }


def test_the_scan_rejects_every_odd_entry_named_like_a_file(site: Site, sim_groups) -> None:
    # the observation the directory claims sb02 of, without its real sb02
    sim_groups(site.incoming, n=1, start="2025-11-01T00:22:00", jitter=0.0, missing=(2,))
    expect = _odd_entries(site.incoming)
    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    r = idx.reconcile()
    assert (r.indexed, r.rejected) == (15, len(expect))
    got = {os.path.basename(f.path): f for f in db.rejected()}
    assert set(got) == set(expect)
    for name, what in expect.items():
        assert got[name].reason == "not_a_file"
        assert got[name].detail.startswith(what) and "remove or rename it" in got[name].detail
    # unchanged: not redone (and not counted again) by the next pass
    r2 = idx.reconcile()
    assert (r2.rejected, r2.unchanged) == (0, 15 + len(expect))
    # the group of their names answers "why is sb02 missing"
    from dsa110_ingest.cli.groups import _rejected_by_group

    (g,) = db.list_groups(None, None, None)
    why = _rejected_by_group(site.cfg, db.rejected(), [g])[g.group_id]
    assert ("sb02", "not_a_file") in [(w["subband"], w["reason"]) for w in why]
    db.close()


def test_the_live_path_rejects_a_fifo_without_opening_it(site: Site) -> None:
    expect = _odd_entries(site.incoming)
    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    # a FIFO opened for reading would block this call for ever (no writer)
    r = idx.index_paths([str(site.incoming / n) for n in expect])
    assert r.rejected == len(expect)
    assert {f.reason for f in db.rejected()} == {"not_a_file"}
    db.close()


@pytest.mark.parametrize("recursive", [True, False])
def test_a_directory_named_like_a_file_is_still_walked_when_recursive(
    site: Site, sim_groups, recursive: bool
) -> None:
    d = site.incoming / "2025-11-01T00:22:00_sb02.hdf5"
    d.mkdir()
    sim_groups(d, n=1)
    cfg = site.cfg
    loc = cfg.storage_locations[0]
    import dataclasses

    cfg = dataclasses.replace(
        cfg, storage_locations=[dataclasses.replace(loc, recursive=recursive)]
    )
    db = site.db()
    idx = Indexer(db, cfg)
    idx.register_locations()
    r = idx.reconcile()
    assert (r.indexed, r.rejected) == ((16 if recursive else 0), 1)
    db.close()


def test_a_member_replaced_by_a_fifo_leaves_its_group(site: Site, sim_groups) -> None:
    """Its data is gone: the group counts it no more (and does not convert a FIFO)."""
    files = sim_groups(site.incoming, n=1)
    db = site.db()
    idx = Indexer(db, site.cfg)
    idx.register_locations()
    idx.reconcile()
    (g,) = db.list_groups(None, None, None)
    victim = next(f for f in files if f.name.endswith("_sb05.hdf5"))
    victim.unlink()
    os.mkfifo(victim)
    r = idx.reconcile()
    assert (r.rejected, r.missing) == (1, 1)
    row = db.get_file(str(victim))
    assert row is not None and row.missing
    from dsa110_ingest.convert.request import build_request
    from dsa110_ingest.errors import ConversionError

    with pytest.raises(ConversionError, match="no longer on disk"):
        build_request(site.cfg, db, g.group_id)  # never handed a FIFO to convert
    db.close()
