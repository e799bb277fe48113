from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from dsa110_ingest import ensure_hdf5_db, ensure_products_db
from dsa110_ingest.db.hdf5 import MIGRATIONS, Hdf5DB
from dsa110_ingest.errors import DatabaseError

from ..conftest import run_without_dac


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
        Hdf5DB(p)


def test_read_only_location_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = run_without_dac(
        "from dsa110_ingest.db.hdf5 import Hdf5DB\n"
        "from dsa110_ingest.errors import DatabaseReadOnlyError\n"
        f"try:\n    Hdf5DB({str(ro / 'h.sqlite3')!r})\n"
        "except DatabaseReadOnlyError as e:\n    print(e)\n"
    )
    assert "make" in r.stdout and "writable" in r.stdout and str(ro) in r.stdout, r.stderr
