"""The SQLite backend: one file per database, WAL, embedded (nothing to run)."""

from __future__ import annotations

from pathlib import Path

from dsa110_ingest.db.sqlite.index import SqliteIndexStore
from dsa110_ingest.db.sqlite.products import SqliteProductsStore


def open_index(target: str | Path, *, readonly: bool = False) -> SqliteIndexStore:
    return SqliteIndexStore(target, readonly=readonly)


def open_products(target: str | Path, *, readonly: bool = False) -> SqliteProductsStore:
    return SqliteProductsStore(target, readonly=readonly)
