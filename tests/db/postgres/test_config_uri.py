"""hdf5_db / products_db (and HDF5_DB_PATH / PRODUCTS_DB_PATH) take libpq URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsa110_ingest.config import describe, load_config
from dsa110_ingest.db import backend_of, open_index, open_products
from dsa110_ingest.errors import ConfigError
from tests.pg_server import PgDatabases

SOCKET_URI = "postgresql:///dsa110_index?host=/run/postgresql&user=ingest"


def _toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "ingest.toml"
    p.write_text('state_dir = "state"\n' + body)
    return p


def test_a_uri_in_the_file_stays_a_uri_unix_socket_included(tmp_path: Path) -> None:
    cfg = load_config(
        _toml(tmp_path, f'hdf5_db = "{SOCKET_URI}"\nproducts_db = "postgres://db.host/prod"\n'),
        env={},
    )
    assert cfg.hdf5_db == SOCKET_URI  # not a path: "//" and the query survive
    assert cfg.products_db == "postgres://db.host/prod"
    assert backend_of(cfg.hdf5_db) == backend_of(cfg.products_db) == "postgresql"


def test_env_uris_override_the_file(tmp_path: Path) -> None:
    cfg = load_config(
        _toml(tmp_path, 'hdf5_db = "x.sqlite3"\n'),
        env={"HDF5_DB_PATH": SOCKET_URI, "PRODUCTS_DB_PATH": "postgresql://h/products"},
    )
    assert cfg.hdf5_db == SOCKET_URI
    assert cfg.products_db == "postgresql://h/products"
    assert cfg.sources["hdf5_db"] == "env HDF5_DB_PATH"


def test_paths_stay_the_sqlite_default(tmp_path: Path) -> None:
    cfg = load_config(_toml(tmp_path, ""), env={})
    assert cfg.hdf5_db == tmp_path / "state" / "hdf5.sqlite3"
    assert backend_of(cfg.hdf5_db) == "sqlite"


def test_one_uri_for_both_databases_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two databases"):
        load_config(
            _toml(tmp_path, f'hdf5_db = "{SOCKET_URI}"\nproducts_db = "{SOCKET_URI}"\n'),
            env={},
        )


def test_config_listing_hides_the_password(tmp_path: Path) -> None:
    cfg = load_config(
        _toml(tmp_path, 'hdf5_db = "postgresql://ingest:hunter2@db.host:5433/idx"\n'),
        env={"PRODUCTS_DB_PATH": "postgresql://db.host/p?password=hunter2&sslmode=require"},
    )
    shown = {k: str(v) for k, v, _ in describe(cfg)}
    assert shown["hdf5_db"] == "postgresql://ingest@db.host:5433/idx"
    assert shown["products_db"] == "postgresql://db.host/p?sslmode=require"
    assert cfg.hdf5_db == "postgresql://ingest:hunter2@db.host:5433/idx"  # used as given


def test_the_factory_opens_configured_uris(tmp_path: Path, pg_dbs: PgDatabases) -> None:
    cfg = load_config(
        _toml(tmp_path, ""), env={"HDF5_DB_PATH": pg_dbs.index, "PRODUCTS_DB_PATH": pg_dbs.products}
    )
    with open_index(cfg) as idx, open_products(cfg) as prod:
        assert type(idx).__name__ == "PostgresIndexStore"
        assert type(prod).__name__ == "PostgresProductsStore"
        assert idx.integrity() == "ok" and prod.integrity() == "ok"
