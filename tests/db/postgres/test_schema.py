"""The PostgreSQL schema: the tables and columns docs/database.md lists (the SQLite
ones), named migrations run once even by two processes at a time, and the wrong
database refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dsa110_ingest.db import open_index_at, open_products_at
from dsa110_ingest.db.postgres.schema import INDEX_MIGRATIONS, PRODUCTS_MIGRATIONS
from dsa110_ingest.errors import DatabaseError, SchemaMissingError
from tests.pg_server import TEMPLATES, PgDatabases, PgServer
from tests.test_docs import _documented

ROOT = Path(__file__).resolve().parents[3]


def _actual(uri: str) -> dict[str, set[str]]:
    import psycopg

    with psycopg.connect(uri) as c:
        rows = c.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ).fetchall()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


@pytest.mark.parametrize("store", ["hdf5", "products"])
def test_schema_matches_the_documented_tables(pg_dbs: PgDatabases, store: str) -> None:
    uri = pg_dbs.index if store == "hdf5" else pg_dbs.products
    doc = _documented(store)
    # the products section says "same as in the HDF5 database" for it
    doc["schema_migrations"] = {"version", "name", "applied_at"}
    assert _actual(uri) == doc


def _version(uri: str) -> list[tuple[int, str]]:
    import psycopg

    with psycopg.connect(uri) as c:
        return [tuple(r) for r in c.execute("SELECT version, name FROM schema_migrations")]


_OPEN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from dsa110_ingest.db import open_index_at
    open_index_at(sys.argv[2]).close()
    """
)


def test_two_processes_migrating_a_new_database_apply_each_migration_once(
    pg_server: PgServer,
) -> None:
    uri = pg_server.uri(pg_server.create_database("fresh"))
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN, str(ROOT), uri], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert _version(uri) == [(i + 1, m.name) for i, m in enumerate(INDEX_MIGRATIONS)]


def test_a_newer_schema_is_refused(pg_server: PgServer) -> None:
    import psycopg

    # a database of its own: the shared pair keeps its schema between tests
    uri = pg_server.uri(pg_server.create_database("newer", TEMPLATES["products"]))
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(
            "INSERT INTO schema_migrations VALUES (%s, 'from the future', 0)",
            (len(PRODUCTS_MIGRATIONS) + 1,),
        )
    with pytest.raises(DatabaseError, match="newer than this program knows"):
        open_products_at(uri)


def test_each_store_refuses_the_others_database(pg_dbs: PgDatabases) -> None:
    with pytest.raises(DatabaseError, match="two different databases"):
        open_products_at(pg_dbs.index)
    with pytest.raises(DatabaseError, match="two different databases"):
        open_index_at(pg_dbs.products)


def test_read_only_open_of_an_empty_database_creates_nothing(pg_server: PgServer) -> None:
    uri = pg_server.uri(pg_server.create_database("empty"))
    with pytest.raises(SchemaMissingError, match="no index schema yet"):
        open_index_at(uri, readonly=True)
    assert _actual(uri) == {}
