"""The copy facility of every backend (``export_rows`` / ``rows_by_key`` /
``import_rows``): what ``migrate --to`` stands on."""

from __future__ import annotations

from typing import Any

import pytest

from dsa110_ingest.db import IndexStore, ProductsStore
from dsa110_ingest.db.records import (
    FILE_COLUMNS,
    INDEX_COPY_TABLES,
    INDEX_ID_KEY,
    ConversionJob,
    Event,
    FileRecord,
    Group,
    Location,
    MetaEntry,
    MsRecord,
    RejectedFile,
)


def _rows() -> dict[str, list[Any]]:
    file = dict.fromkeys(FILE_COLUMNS)
    return {
        "meta": [MetaEntry("max_group_span_mjd", "0.0035"), MetaEntry("note", None)],
        "storage_locations": [
            Location(3, "incoming", "/data/a/incoming", "incoming", None, "node-a"),
            Location(7, "archive", "/data/a/archive", "archive", "old", "node-a"),
        ],
        "groups": [
            Group(
                f"2025-10-02T00:0{i}:00",
                "complete",
                16,
                16,
                0,
                1.7e9 + i,
                1.7e9 + i + 3,
                60950.0 + i,
                60950.003 + i,
                1.0,
                2.0,
                3.0,
                None,
                4.0,
            )
            for i in range(3)
        ],
        "hdf5_file_index": [
            FileRecord(
                **(
                    file
                    | {
                        "path": f"/data/a/incoming/f{i:03d}_sb{i % 16:02d}.hdf5",
                        "filename": f"f{i:03d}_sb{i % 16:02d}.hdf5",
                        "group_id": "2025-10-02T00:00:00",
                        "subband_num": i % 16,
                        "stored": 1,
                        "is_duplicate": 0,
                        "storage_location_id": 3,
                        "mtime_ns": 10**18 + i,
                        "timestamp_mjd": 60950.5,
                    }
                )
            )
            for i in range(25)
        ],
        "rejected_files": [
            RejectedFile(
                "/data/a/incoming/bad\\xff.hdf5",
                "not_hdf5",
                "no signature",
                5,
                9,
                1.0,
                2.0,
                3,
                3,
                b"/data/a/incoming/bad\xff.hdf5",
            ),
        ],
        "events": [
            Event(i, "group.complete", "2025-10-02T00:00:00", {"files": ["a", "b"], "n": i}, 5.0)
            for i in (4, 9, 40)
        ],
        "conversion_jobs": [
            ConversionJob(
                "2025-10-02T00:01:00",
                "converted",
                60951.0,
                0,
                1,
                0.0,
                None,
                None,
                None,
                "/ms/x.ms",
                1.0,
                2.0,
                1.5,
                2.0,
                "tok",
            )
        ],
    }


def _all(store: IndexStore | ProductsStore, table: str, key: str) -> list[Any]:
    out: list[Any] = []
    after = None
    while batch := store.export_rows(table, after, 4):
        assert len(batch) <= 4
        out += batch
        after = getattr(batch[-1], key)
    return out


def test_index_rows_round_trip_with_their_ids(index_store: IndexStore) -> None:
    rows = _rows()
    with index_store.transaction():
        for table, recs in rows.items():
            assert index_store.import_rows(table, recs) == len(recs), table
    for table, (_cls, key) in INDEX_COPY_TABLES.items():
        # the store's own identity (a fresh SQLite index has one) is not a copied row
        got = [r for r in _all(index_store, table, key) if getattr(r, "key", "") != INDEX_ID_KEY]
        assert sorted(map(repr, got)) == sorted(map(repr, rows[table])), table
        # paged by key: each page starts after the last key of the one before
        keys = [getattr(r, key) for r in got]
        assert len(set(keys)) == len(keys)
        present = [getattr(r, key) for r in rows[table][:2]]
        found = index_store.rows_by_key(table, [*present, -1 if key == "id" else "absent"])
        assert set(found) == set(present) and all(found[k] in rows[table] for k in found)
    # a second import inserts nothing and changes nothing
    with index_store.transaction():
        assert sum(index_store.import_rows(t, r) for t, r in rows.items()) == 0
    # id counters continue past the copied ids
    with index_store.transaction():
        assert index_store.add_event("group.complete", None, {}, 6.0) > 40
    assert index_store.ensure_location("new", "/data/a/new", "incoming", node="node-a") > 7


def test_products_rows_round_trip(products_store: ProductsStore) -> None:
    ms = [
        MsRecord(
            f"/ms/{i}.ms",
            60950.0,
            60950.1,
            60950.05,
            1.0,
            "converted",
            None,
            None,
            0,
            None,
            10.0,
            20.0,
            f"g{i}",
            16,
            None,
            768,
            1.3e9,
            1.5e9,
        )
        for i in range(9)
    ]
    with products_store.transaction():
        assert products_store.import_rows("ms_index", ms) == 9
        assert products_store.import_rows("ms_index", ms[:3]) == 0
    assert sorted(map(repr, _all(products_store, "ms_index", "path"))) == sorted(map(repr, ms))
    assert products_store.rows_by_key("ms_index", ["/ms/2.ms"]) == {"/ms/2.ms": ms[2]}


def test_an_unknown_table_is_refused(index_store: IndexStore) -> None:
    with pytest.raises(ValueError, match="not a copyable table"):
        index_store.export_rows("heartbeat")
