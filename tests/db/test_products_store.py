"""The products store on every backend (STORE_BACKENDS)."""

from __future__ import annotations

from dsa110_ingest.db import ProductsStore
from dsa110_ingest.db.records import MS_COLUMNS, MsRecord, field_names


def test_ms_columns_match_the_record() -> None:
    assert field_names(MsRecord) == MS_COLUMNS


def test_upsert_never_overwrites_a_value_with_null(products_store: ProductsStore) -> None:
    db = products_store
    db.upsert_ms({"path": "/ms/a.ms", "group_id": "g", "ra_deg": 10.0, "status": "converted"})
    db.upsert_ms({"path": "/ms/a.ms", "ra_deg": None, "dec_deg": 5.0, "status": "imaged"})
    row = db.ms("/ms/a.ms")
    assert row is not None
    assert (row.ra_deg, row.dec_deg, row.status, row.group_id) == (10.0, 5.0, "imaged", "g")
    assert len(db.all_ms()) == 1


def test_status_delete_and_order(products_store: ProductsStore) -> None:
    db = products_store
    db.upsert_ms({"path": "/ms/b.ms", "mid_mjd": 2.0, "status": "converted"})
    db.upsert_ms({"path": "/ms/a.ms", "mid_mjd": 1.0, "status": "converted"})
    assert [r.path for r in db.all_ms()] == ["/ms/a.ms", "/ms/b.ms"]
    db.set_status("/ms/a.ms", "missing", 5.0)
    a = db.ms("/ms/a.ms")
    assert a is not None and (a.status, a.stage_updated_at) == ("missing", 5.0)
    db.delete("/ms/a.ms")
    assert db.ms("/ms/a.ms") is None and [r.path for r in db.all_ms()] == ["/ms/b.ms"]


def test_a_fresh_products_db_has_no_legacy_table(products_store: ProductsStore) -> None:
    assert not products_store.has_table("hdf5_file_index")
    assert products_store.has_table("ms_index")
    assert products_store.integrity() == "ok"
