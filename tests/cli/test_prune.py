"""`prune` in-process on real databases: files and Measurement Sets gone from disk are
marked (or their rows deleted), nothing else changes, `--dry-run` changes nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dsa110_ingest.cli import prune
from dsa110_ingest.db import open_products
from dsa110_ingest.ingest.indexer import Indexer

from ..conftest import Site


def _args(*, dry_run: bool = False, delete_rows: bool = False) -> argparse.Namespace:
    return argparse.Namespace(dry_run=dry_run, delete_rows=delete_rows)


def _stored(site: Site, path: Path) -> int:
    with site.db(readonly=True) as db:
        row = db.get_file(str(path))
    assert row is not None
    return int(row.stored)


def _ms_status(site: Site) -> dict[str, str]:
    with open_products(site.cfg, readonly=True) as p:
        return {Path(r.path).name: r.status for r in p.all_ms()}


@pytest.fixture
def indexed(site: Site, sim_groups) -> list[Path]:
    files = sim_groups(site.incoming, n=1)
    with site.db() as db:
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        try:
            assert idx.reconcile().indexed == 16
        finally:
            idx.close()
    return files


def _products(site: Site, present: list[str], gone: list[str]) -> None:
    out = site.root / "ms"
    out.mkdir(exist_ok=True)
    with open_products(site.cfg) as p:
        for name in present:
            (out / name).mkdir()
            p.upsert_ms({"path": str(out / name), "status": "converted"})
        for name in gone:
            p.upsert_ms({"path": str(out / name), "status": "converted"})


def test_prune_marks_vanished_files_and_ms_and_nothing_else(
    site: Site, indexed: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    indexed[2].unlink()
    _products(site, ["kept.ms"], ["lost.ms"])
    assert prune.run(site.cfg, _args()) == 0
    assert _stored(site, indexed[2]) == 0
    assert all(_stored(site, f) == 1 for f in indexed if f != indexed[2])
    assert _ms_status(site) == {"kept.ms": "converted", "lost.ms": "missing"}
    out = capsys.readouterr()
    assert f"prune: file gone: {indexed[2]}" in out.out and "lost.ms" in out.out
    assert "1 subband file(s) newly missing (marked stored = 0), 0 already" in out.err
    assert "set status = 'missing' on 1 vanished Measurement Set(s)" in out.err
    # a second run finds nothing new: a file already marked is not counted again
    assert prune.run(site.cfg, _args()) == 0
    assert (
        "0 subband file(s) newly missing (marked stored = 0), 1 already marked missing"
        in capsys.readouterr().err
    )


def test_dry_run_lists_and_changes_nothing(
    site: Site, indexed: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    indexed[0].unlink()
    _products(site, [], ["lost.ms"])
    before = site.cfg.hdf5_db.read_bytes(), site.cfg.products_db.read_bytes()
    assert prune.run(site.cfg, _args(dry_run=True)) == 0
    assert (site.cfg.hdf5_db.read_bytes(), site.cfg.products_db.read_bytes()) == before
    assert _stored(site, indexed[0]) == 1 and _ms_status(site) == {"lost.ms": "converted"}
    err = capsys.readouterr().err
    assert "1 subband file(s) newly missing (would mark stored = 0)" in err
    assert "would set status = 'missing' on 1 vanished" in err


def test_delete_rows_removes_the_rows_of_vanished_ms_even_when_already_marked(
    site: Site, indexed: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _products(site, ["kept.ms"], ["lost.ms", "older.ms"])
    prune.run(site.cfg, _args())  # marks both missing first
    capsys.readouterr()
    assert prune.run(site.cfg, _args(dry_run=True, delete_rows=True)) == 0
    assert "would delete the rows of 2 vanished" in capsys.readouterr().err
    assert len(_ms_status(site)) == 3
    assert prune.run(site.cfg, _args(delete_rows=True)) == 0
    assert _ms_status(site) == {"kept.ms": "converted"}
    assert "deleted the rows of 2 vanished Measurement Set(s)" in capsys.readouterr().err


def test_without_a_products_database_only_files_are_pruned(
    site: Site, indexed: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    indexed[1].unlink()
    assert not site.cfg.products_db.exists()
    assert prune.run(site.cfg, _args()) == 0
    assert not site.cfg.products_db.exists()  # not created by a prune
    assert _stored(site, indexed[1]) == 0
    assert "Measurement Set" not in capsys.readouterr().err


def test_files_the_daemon_already_marked_are_counted_apart(
    site: Site, indexed: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon's reconcile marks vanished files itself: prune says so, not "0"."""
    for f in indexed[:3]:
        f.unlink()
    with site.db() as db:
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        try:
            assert idx.reconcile().missing == 3
        finally:
            idx.close()
    indexed[3].unlink()
    assert prune.run(site.cfg, _args()) == 0
    err = capsys.readouterr().err
    assert "1 subband file(s) newly missing (marked stored = 0), 3 already marked missing" in err


def test_paths_are_printed_with_control_characters_escaped(
    site: Site, sim_groups, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder name holding a newline cannot forge a second `file gone` line."""
    odd = site.root / "in\nprune: file gone: /forged"
    odd.mkdir(parents=True)
    with site.config_path.open("a") as f:
        f.write(f'\n[[storage_locations]]\nname = "odd"\npath = {json.dumps(str(odd))}\n')
    files = sim_groups(odd, n=1)
    with site.db() as db:
        idx = Indexer(db, site.cfg)
        idx.register_locations()
        try:
            assert idx.reconcile().indexed == 16
        finally:
            idx.close()
    files[0].unlink()
    assert prune.run(site.cfg, _args(dry_run=True)) == 0
    escaped = str(odd).replace("\n", "\\n")
    assert capsys.readouterr().out.splitlines() == [f"prune: file gone: {escaped}/{files[0].name}"]
