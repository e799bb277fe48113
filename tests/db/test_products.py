from __future__ import annotations

from pathlib import Path

from dsa110_ingest.db.products import ProductsDB


def test_upsert_never_overwrites_a_value_with_null(tmp_path: Path) -> None:
    with ProductsDB(tmp_path / "p.sqlite3") as db:
        db.upsert_ms({"path": "/ms/a.ms", "group_id": "g", "ra_deg": 10.0, "status": "converted"})
        db.upsert_ms({"path": "/ms/a.ms", "ra_deg": None, "dec_deg": 5.0, "status": "imaged"})
        row = db.ms("/ms/a.ms")
        assert row is not None
        assert (row["ra_deg"], row["dec_deg"], row["status"], row["group_id"]) == (
            10.0,
            5.0,
            "imaged",
            "g",
        )
        assert len(db.all_ms()) == 1


def test_legacy_ms_index_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

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
    with ProductsDB(p) as db:
        cols = {r[1] for r in db.conn.execute("PRAGMA table_info(ms_index)")}
        assert {"group_id", "dec_deg", "n_subbands"} <= cols
        assert db.ms("/old.ms")["status"] == "done"
