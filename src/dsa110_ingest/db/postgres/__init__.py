"""The PostgreSQL backend: one index (and products DB) shared by several ingest nodes.

Selected by a ``postgresql://`` / ``postgres://`` value of ``hdf5_db`` / ``products_db``
(libpq URIs, unix sockets included: ``postgresql:///dsa110?host=/run/postgresql``).
Needs the extra ``dsa110-ingest[postgresql]`` (psycopg 3). docs/database.md describes
the schema and the locks, docs/scale-out.md when and how to use it.
"""

from __future__ import annotations

# an ImportError here (no driver) lets the factory name the database and the extra
import psycopg  # noqa: F401

from dsa110_ingest.db.postgres.index import PostgresIndexStore
from dsa110_ingest.db.postgres.products import PostgresProductsStore

__all__ = ["PostgresIndexStore", "PostgresProductsStore", "open_index", "open_products"]


def open_index(target: str, *, readonly: bool = False) -> PostgresIndexStore:
    return PostgresIndexStore(str(target), readonly=readonly)


def open_products(target: str, *, readonly: bool = False) -> PostgresProductsStore:
    return PostgresProductsStore(str(target), readonly=readonly)
