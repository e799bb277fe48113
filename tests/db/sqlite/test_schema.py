from __future__ import annotations

import os
import socket
import sqlite3
import stat
from pathlib import Path

import pytest

from dsa110_ingest import ensure_hdf5_db, ensure_products_db
from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.db.sqlite.schema import INDEX_MIGRATIONS, PRODUCTS_MIGRATIONS
from dsa110_ingest.errors import DatabaseError

from ...conftest import DATA, run_without_dac

MIGRATIONS = INDEX_MIGRATIONS


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_hdf5_db_schema_pragmas_and_version(tmp_path: Path) -> None:
    conn = ensure_hdf5_db(tmp_path / "h.sqlite3")
    assert {
        "hdf5_file_index",
        "storage_locations",
        "groups",
        "events",
        "rejected_files",
        "conversion_jobs",
    } <= _tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(hdf5_file_index)")}
    legacy = {
        "path",
        "filename",
        "group_id",
        "subband_code",
        "subband_num",
        "timestamp_iso",
        "timestamp_mjd",
        "file_size_bytes",
        "modified_time",
        "indexed_at",
        "stored",
        "ra_deg",
        "dec_deg",
        "obs_date",
        "obs_time",
    }
    header = {
        "start_mjd",
        "end_mjd",
        "mid_mjd",
        "freq_min_hz",
        "freq_max_hz",
        "n_freqs",
        "n_times",
        "n_ants",
        "n_pols",
        "n_blts",
        "telescope_name",
        "storage_location_id",
    }
    assert legacy | header <= cols
    conn.close()


def test_products_db_never_has_the_hdf5_table(tmp_path: Path) -> None:
    conn = ensure_products_db(tmp_path / "p.sqlite3")
    assert "ms_index" in _tables(conn) and "hdf5_file_index" not in _tables(conn)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(ms_index)")}
    assert {
        "path",
        "group_id",
        "start_mjd",
        "end_mjd",
        "mid_mjd",
        "processed_at",
        "status",
        "stage",
        "stage_updated_at",
        "ra_deg",
        "dec_deg",
    } <= cols


def test_reopening_runs_no_migration_twice(tmp_path: Path) -> None:
    p = tmp_path / "h.sqlite3"
    ensure_hdf5_db(p).close()
    conn = ensure_hdf5_db(p)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_db_files_are_created_0640(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_hdf5_db(tmp_path / "h.sqlite3").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "h.sqlite3").stat().st_mode) == 0o640


def test_newer_schema_than_known_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "h.sqlite3"
    c = sqlite3.connect(p)
    c.execute("PRAGMA user_version = 99")
    c.close()
    with pytest.raises(DatabaseError, match="newer than this program knows"):
        open_index_at(p)


def test_read_only_location_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = run_without_dac(
        "from dsa110_ingest.db import open_index_at\n"
        "from dsa110_ingest.errors import DatabaseReadOnlyError\n"
        f"try:\n    open_index_at({str(ro / 'h.sqlite3')!r})\n"
        "except DatabaseReadOnlyError as e:\n    print(e)\n"
    )
    assert "make" in r.stdout and "writable" in r.stdout and str(ro) in r.stdout, r.stderr


def test_legacy_ms_index_gains_the_new_columns(tmp_path: Path) -> None:
    p = tmp_path / "p.sqlite3"
    c = sqlite3.connect(p)
    c.execute(
        "CREATE TABLE ms_index (path TEXT PRIMARY KEY, start_mjd REAL, end_mjd REAL, "
        "mid_mjd REAL, processed_at REAL, status TEXT, stage TEXT, stage_updated_at REAL, "
        "cal_applied INTEGER, imagename TEXT, ra_deg REAL)"
    )
    c.execute("INSERT INTO ms_index (path, status) VALUES ('/old.ms', 'done')")
    c.commit()
    c.close()
    # read-only (as `migrate` reads an upstream DB): the missing columns read as None
    with open_products_at(p, readonly=True) as db:
        old = db.ms("/old.ms")
        assert old is not None and old.status == "done" and old.group_id is None
    with open_products_at(p) as db:
        cols = {r[1] for r in db.dbapi_connection().execute("PRAGMA table_info(ms_index)")}
        assert {"group_id", "dec_deg", "n_subbands"} <= cols
        row = db.ms("/old.ms")
        assert row is not None and row.status == "done"


def _restore(dump: str, dest: Path) -> None:
    text = (DATA / dump).read_text()
    version = int(text.split("PRAGMA user_version = ")[1].split()[0])
    c = sqlite3.connect(dest)
    c.executescript(text)
    c.execute(f"PRAGMA user_version = {version}")
    c.close()


def test_a_pre_seam_index_opens_and_migrates_unchanged(tmp_path: Path) -> None:
    p = tmp_path / "hdf5.sqlite3"
    _restore("pre_seam_hdf5.sql", p)
    # the migrations that made it are unchanged, in order; the seam only appended
    assert [m.name for m in INDEX_MIGRATIONS[:3]] == [
        "initial schema",
        "rejected_files.path_bytes",
        "conversion attempt token",
    ]
    # `status` beside an older daemon not yet restarted: read-only, nothing migrated
    with open_index_at(p, readonly=True) as db:
        assert db.group("2025-10-02T00:00:00") is not None
        assert [loc.node for loc in db.locations()] == [""]
        hb = db.heartbeat("oldhost")
        assert hb is not None and (hb.pid, hb.status) == (4242, {"ok": True})
        assert [h.node for h in db.heartbeats()] == ["oldhost"]
        c = db.dbapi_connection()
        assert c.execute("PRAGMA user_version").fetchone()[0] == 3
    with open_index_at(p) as db:
        c = db.dbapi_connection()
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(INDEX_MIGRATIONS)
        (loc,) = db.locations()
        assert (loc.name, loc.path, loc.role, loc.node) == (
            "incoming",
            "/data/incoming",
            "incoming",
            "",
        )
        assert db.locations(node="") == [loc] and db.locations(node="other") == []
        g = db.group("2025-10-02T00:00:00")
        assert g is not None and (g.n_subbands, g.state) == (2, "collecting")
        files = db.group_files(g.group_id)
        assert [f.subband_num for f in files] == [0, 1] and files[0].storage_location_id == loc.id
        (ev,) = db.events_after(0)
        assert ev.payload == {"files": ["a", "b"]} and db.event_id_high() == 1
        job = db.job(g.group_id)
        assert job is not None and job.state == "pending"
        assert [r.reason for r in db.rejected()] == ["unreadable"]
        # the single heartbeat row became the node named after its host
        (hb,) = db.heartbeats()
        assert (hb.node, hb.pid, hb.status) == ("oldhost", 4242, {"ok": True})
        db.write_heartbeat(socket.gethostname(), 1, "h", 0.0, 1.0, {})
        assert len(db.heartbeats()) == 2 - (socket.gethostname() == "oldhost")
        assert db.integrity() == "ok"
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_pre_seam_products_db_opens_unchanged(tmp_path: Path) -> None:
    p = tmp_path / "products.sqlite3"
    _restore("pre_seam_products.sql", p)
    with open_products_at(p) as db:
        c = db.dbapi_connection()
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(PRODUCTS_MIGRATIONS)
        (row,) = db.all_ms()
        assert (row.path, row.status, row.group_id) == (
            "/ms/2025-10-02T00:00:00.ms",
            "converted",
            "2025-10-02T00:00:00",
        )


def test_memory_index_needs_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_index_at(":memory:") as db:
        db.ensure_location("a", "/a", "incoming")
        assert [loc.name for loc in db.locations()] == ["a"]
    assert list(tmp_path.iterdir()) == []
