"""``migrate --to``: a SQLite index and products DB copied through the store interface,
verified, idempotent, resumable; ``--dry-run`` changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.db.records import (
    INDEX_COPY_TABLES,
    INDEX_ID_KEY,
    PRODUCTS_COPY_TABLES,
    MetaEntry,
)
from dsa110_ingest.errors import DatabaseError, MigrationError
from dsa110_ingest.migrate_to import copy_stores

from .conftest import Site, converter_script, write_site
from .pg_server import PgDatabases, PgServer


def _all(store: Any, table: str) -> list[Any]:
    key = {**INDEX_COPY_TABLES, **PRODUCTS_COPY_TABLES}[table][1]
    out: list[Any] = []
    after = None
    while batch := store.export_rows(table, after, 7):
        out += batch
        after = getattr(batch[-1], key)
    return out


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A used single-node deployment: converted groups, an incomplete one, a rejected
    file, events of several types, ms_index rows."""
    root = tmp_path_factory.mktemp("src")
    conv = converter_script(root / "conv")
    site = write_site(
        root / "site",
        convert=f'[convert]\nbackend = "command"\ncommand = ["{conv}", "{{output}}", '
        '"{inputs}"]\noutput_dir = "ms"\n',
    )
    site.config_path.write_text('node = "ingest-a"\n' + site.config_path.read_text())
    site.cli("simulate", "--out", str(site.incoming), "--groups", "3", "--nants", "2",
             "--nchan", "1", "--ntimes", "2")  # fmt: skip
    site.cli("simulate", "--out", str(site.incoming), "--groups", "1", "--nants", "2",
             "--nchan", "1", "--ntimes", "2", "--start", "2025-10-03T00:00:00",
             "--missing", "3")  # fmt: skip
    (site.incoming / "2025-10-04T00:00:00_sb00.hdf5").write_bytes(b"not hdf5")
    site.cli("run", "--rescan", check=False)
    return site


@pytest.fixture
def stores(deployment: Site, tmp_path: Path) -> Iterator[tuple[Any, Any, Any, Any]]:
    state = deployment.root / "state"
    with (
        open_index_at(state / "hdf5.sqlite3", readonly=True) as si,
        open_products_at(state / "products.sqlite3", readonly=True) as sp,
        open_index_at(tmp_path / "dst-index.sqlite3") as di,
        open_products_at(tmp_path / "dst-products.sqlite3") as dp,
    ):
        yield si, sp, di, dp


def test_source_deployment_has_every_kind_of_row(stores: tuple[Any, ...]) -> None:
    si, sp, _, _ = stores
    for table in INDEX_COPY_TABLES:
        assert _all(si, table), table
    assert len(_all(sp, "ms_index")) == 3
    assert {e.type for e in _all(si, "events")} >= {"group.complete", "group.converted"}


def test_dry_run_reports_and_writes_nothing(stores: tuple[Any, ...]) -> None:
    si, sp, di, dp = stores
    own_id = di.index_id()
    rep = copy_stores(si, sp, di, dp, node="ingest-a", dry_run=True)
    by = {t.table: t for t in rep.tables}
    assert by["events"].copied == len(_all(si, "events")) > 0
    assert by["hdf5_file_index"].copied == len(_all(si, "hdf5_file_index")) == 63
    assert not rep.verified
    for table in INDEX_COPY_TABLES:
        # a new index has nothing but its own identity, which a dry run leaves alone
        want = [MetaEntry(INDEX_ID_KEY, own_id)] if table == "meta" else []
        assert _all(di, table) == want, table
    assert own_id != si.index_id() and any(si.index_id() in x for x in rep.lines(True))
    assert _all(dp, "ms_index") == []
    assert any("would copy" in line for line in rep.lines(True))


def test_copy_keeps_ids_verifies_and_a_rerun_copies_nothing(stores: tuple[Any, ...]) -> None:
    si, sp, di, dp = stores
    rep = copy_stores(si, sp, di, dp, node="ingest-b", batch_rows=5)
    assert rep.verified and rep.conflicts == 0
    # the same index, moved: its identity (named by the output_dir's claim) moved too
    assert di.index_id() == si.index_id() == rep.index_id is not None
    for table in INDEX_COPY_TABLES:
        src = _all(si, table)
        dst = _all(di, table)
        if table == "storage_locations":
            # the daemon gave them its node: kept (only rows without a node get --node)
            assert {loc.node for loc in src} == {"ingest-a"}
        assert dst == src, table
    assert _all(dp, "ms_index") == _all(sp, "ms_index")
    # the next event id continues above every id the source handed out
    high = si.event_id_high()
    assert rep.event_id_high == high
    with di.transaction():
        assert di.add_event("group.complete", None, {}, 0.0) > high

    again = copy_stores(si, sp, di, dp, node="ingest-b", batch_rows=5)
    assert again.copied == 0 and again.verified
    assert all(t.already_there == t.source_rows > 0 for t in again.tables)


def test_locations_without_a_node_get_the_named_one(tmp_path: Path) -> None:
    with (
        open_index_at(tmp_path / "s.sqlite3") as si,
        open_products_at(tmp_path / "sp.sqlite3") as sp,
        open_index_at(tmp_path / "d.sqlite3") as di,
        open_products_at(tmp_path / "dp.sqlite3") as dp,
    ):
        si.ensure_location("incoming", "/data/incoming", "incoming")  # node '' (old index)
        copy_stores(si, sp, di, dp, node="ingest-7")
        assert [(loc.name, loc.node) for loc in di.locations()] == [("incoming", "ingest-7")]
        assert di.locations("ingest-7")[0].id == si.locations()[0].id


def test_an_interrupted_copy_resumes(stores: tuple[Any, ...]) -> None:
    si, sp, di, dp = stores

    class Interrupted(Exception):
        pass

    def stop(copied: int) -> None:
        if copied >= 10:
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_stores(si, sp, di, dp, node="n", batch_rows=5, on_batch=stop)
    partial = len(_all(di, "hdf5_file_index"))
    assert 0 < partial < 63  # committed batches stay
    rep = copy_stores(si, sp, di, dp, node="n", batch_rows=5)
    by = {t.table: t for t in rep.tables}
    assert by["hdf5_file_index"].already_there == partial
    assert by["hdf5_file_index"].copied == 63 - partial
    assert rep.verified
    assert _all(di, "hdf5_file_index") == _all(si, "hdf5_file_index")


def test_a_different_row_in_the_destination_is_named_and_fails(stores: tuple[Any, ...]) -> None:
    si, sp, di, dp = stores
    first = _all(si, "groups")[0]
    with di.transaction():
        di.import_rows("groups", [dataclasses.replace(first, n_subbands=1)])
    dry = copy_stores(si, sp, di, dp, node="n", dry_run=True)
    assert dry.conflicts == 1
    with pytest.raises(MigrationError, match=f"group_id '{first.group_id}' differs in n_subbands"):
        copy_stores(si, sp, di, dp, node="n")
    # everything else was copied; the conflicting row was left as it was
    assert di.group(first.group_id).n_subbands == 1
    assert len(_all(di, "hdf5_file_index")) == 63


# -- the command, into a real PostgreSQL server ----------------------------------------------
@pytest.fixture
def empty_pg(pg_server: PgServer) -> Iterator[PgDatabases]:
    """Two databases with no tables at all, as a DBA creates them."""
    names = [pg_server.create_database(f"mig_{s}", None) for s in ("index", "products")]
    try:
        yield PgDatabases(*(pg_server.uri(n) for n in names))
    finally:
        for n in names:
            pg_server.drop_database(n)


def _copy_cli(site: Site, dbs: PgDatabases, *extra: str, check: bool = True) -> Any:
    return site.cli(
        "migrate", "--to", dbs.index, "--products-to", dbs.products, *extra, check=check
    )


def _pg_rows(dbs: PgDatabases) -> dict[str, list[Any]]:
    with (
        open_index_at(dbs.index, readonly=True) as di,
        open_products_at(dbs.products, readonly=True) as dp,
    ):
        out = {t: _all(di, t) for t in INDEX_COPY_TABLES}
        out["ms_index"] = _all(dp, "ms_index")
        return out


def test_migrate_to_postgresql_dry_run_copy_rerun(
    deployment: Site, empty_pg: PgDatabases, tmp_path: Path
) -> None:
    dbs = empty_pg
    dry = _copy_cli(deployment, dbs, "--dry-run")
    assert "would copy 63" in dry.stderr and "dry run, nothing changed" in dry.stderr
    assert "no tables yet" in dry.stderr
    with pytest.raises(DatabaseError, match="no index schema yet"):
        open_index_at(dbs.index, readonly=True)  # not even the tables were created

    done = _copy_cli(deployment, dbs)
    assert "hdf5_file_index: 63 row(s); copied 63" in done.stderr
    assert "verified: all" in done.stderr
    state = deployment.root / "state"
    with (
        open_index_at(state / "hdf5.sqlite3", readonly=True) as si,
        open_products_at(state / "products.sqlite3", readonly=True) as sp,
    ):
        src = {t: _all(si, t) for t in INDEX_COPY_TABLES}
        src["ms_index"] = _all(sp, "ms_index")
        high = si.event_id_high()
    got = _pg_rows(dbs)
    for table in INDEX_COPY_TABLES:
        # PostgreSQL orders text its own way: compare as sets of rows
        assert sorted(map(repr, got[table])) == sorted(map(repr, src[table])), table
    assert sorted(map(repr, got["ms_index"])) == sorted(map(repr, src["ms_index"]))

    again = _copy_cli(deployment, dbs)
    assert "copied 0," in again.stderr and "copied 1" not in again.stderr
    assert "verified: all" in again.stderr

    # the node starts on PostgreSQL where SQLite left off: nothing re-read, no new event
    text = deployment.config_path.read_text()
    text = text.replace('state_dir = "state"', f'state_dir = "{tmp_path / "pg-state"}"')
    text = text.replace('path = "incoming"', f'path = "{deployment.incoming}"')
    cfg = tmp_path / "pg.toml"
    cfg.write_text(f'hdf5_db = "{dbs.index}"\nproducts_db = "{dbs.products}"\n' + text)
    rescan = Site(tmp_path, cfg, deployment.incoming).cli("run", "--rescan")
    assert (
        # 63 files and the rejected one
        '"indexed": 0' in rescan.stderr and '"unchanged": 64' in rescan.stderr
    )
    with open_index_at(dbs.index) as di:
        assert [e.id for e in _all(di, "events")] == [e.id for e in src["events"]]
        assert len(_all(di, "hdf5_file_index")) == 63
        with di.transaction():
            assert di.add_event("group.complete", None, {}, 0.0) > high


def test_migrate_to_killed_half_way_resumes(deployment: Site, empty_pg: PgDatabases) -> None:
    dbs = empty_pg
    killed = _copy_cli(deployment, dbs, "--batch-rows", "10", "--stop-after-rows", "20",
                       check=False)  # fmt: skip
    assert killed.returncode == -9  # SIGKILLed itself once 20 rows of a table were in
    partial = _pg_rows(dbs)
    assert 0 < sum(len(v) for v in partial.values()) < 200
    done = _copy_cli(deployment, dbs, "--batch-rows", "10")
    assert "verified: all" in done.stderr
    assert len(_pg_rows(dbs)["hdf5_file_index"]) == 63


def test_migrate_to_refuses_beside_a_running_daemon_and_needs_products_to(
    deployment: Site, empty_pg: PgDatabases, daemon_factory
) -> None:
    p = deployment.cli("migrate", "--to", empty_pg.index, check=False)
    assert p.returncode == 1 and "--to needs --products-to" in p.stderr
    d = daemon_factory(deployment, "--no-convert")
    d.wait_ready(60)
    p = _copy_cli(deployment, empty_pg, check=False)
    assert p.returncode == 1 and f"another dsa110-ingest (pid {d.proc.pid})" in p.stderr
    assert d.stop() == 0


def test_migrate_to_from_an_index_of_an_older_version_changes_no_source_byte(
    tmp_path: Path, empty_pg: PgDatabases
) -> None:
    """A node still on the pre-seam schema (v3: no node column, one heartbeat row) is
    read from a migrated throw-away copy: its files are not touched, not even migrated."""
    import sqlite3

    site = write_site(tmp_path / "old")
    state = site.root / "state"
    state.mkdir()
    data = Path(__file__).parent / "data"
    for dump, name in (("pre_seam_hdf5.sql", "hdf5.sqlite3"),
                       ("pre_seam_products.sql", "products.sqlite3")):  # fmt: skip
        text = (data / dump).read_text()
        c = sqlite3.connect(state / name)
        c.executescript(text)
        c.execute(f"PRAGMA user_version = {text.split('PRAGMA user_version = ')[1].split()[0]}")
        c.close()
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    dry = _copy_cli(site, empty_pg, "--dry-run", "--node", "old-host")
    assert "storage_locations: 1 row(s); would copy 1" in dry.stderr
    done = _copy_cli(site, empty_pg, "--node", "old-host")
    assert "verified: all" in done.stderr
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.suffix != ".lock"} == before
    got = _pg_rows(empty_pg)
    assert [loc.node for loc in got["storage_locations"]] == ["old-host"]
    assert len(got["hdf5_file_index"]) == 2 and len(got["ms_index"]) == 1
