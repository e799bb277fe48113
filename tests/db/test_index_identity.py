"""The index's identity (``IndexStore.index_id``), named by the output_dir's ownership
claim: made once with the index, stable, distinct per index, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dsa110_ingest.db import open_index_at
from dsa110_ingest.db.postgres.schema import INDEX_MIGRATIONS as PG_MIGRATIONS
from dsa110_ingest.db.records import INDEX_ID_KEY
from dsa110_ingest.db.sqlite.schema import INDEX_MIGRATIONS

from ..conftest import DATA, STORE_BACKENDS, store_target


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_identity_is_made_once_stable_and_distinct(
    request: pytest.FixtureRequest, backend: str
) -> None:
    first = store_target(request, backend, "hdf5")
    with open_index_at(first) as db:
        made = db.index_id()
    assert made and len(made) == 32
    with open_index_at(first) as db:
        assert db.index_id() == made  # a restart: the same index
    with open_index_at(first, readonly=True) as db:
        assert db.index_id() == made  # `status`, `doctor`
    other = store_target(request, backend, "other") if backend == "sqlite" else None
    if other is not None:
        with open_index_at(other) as db:
            assert db.index_id() not in (None, made)


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_adopted_identity_persists_and_a_lost_one_is_made_anew(
    request: pytest.FixtureRequest, backend: str
) -> None:
    target = store_target(request, backend, "hdf5")
    with open_index_at(target) as db:
        old = db.index_id()
        db.adopt_index_id("0123456789abcdef0123456789abcdef")
    with open_index_at(target) as db:
        assert db.index_id() == "0123456789abcdef0123456789abcdef" != old
        with db.transaction("test: lose the row"):
            db.dbapi_connection().execute(
                "DELETE FROM meta WHERE key = " + ("?" if backend == "sqlite" else "%s"),
                (INDEX_ID_KEY,),
            )
    with open_index_at(target, readonly=True) as db:
        assert db.index_id() is None  # read-only: nothing is made
    with open_index_at(target) as db:
        fresh = db.index_id()
    # a new identity: a claim naming the old one is no longer this index's
    assert fresh and fresh not in (old, "0123456789abcdef0123456789abcdef")


def test_the_migration_is_named_and_last_on_both_backends() -> None:
    assert INDEX_MIGRATIONS[-1].name == PG_MIGRATIONS[-1].name == "index identity"


def test_an_index_from_an_older_release_gets_its_identity_when_migrated(tmp_path: Path) -> None:
    p = tmp_path / "hdf5.sqlite3"
    text = (DATA / "pre_seam_hdf5.sql").read_text()
    c = sqlite3.connect(p)
    c.executescript(text)
    c.execute(f"PRAGMA user_version = {int(text.split('PRAGMA user_version = ')[1].split()[0])}")
    c.close()
    with open_index_at(p, readonly=True) as db:
        assert db.index_id() is None  # beside an older daemon: nothing changes
    with open_index_at(p) as db:
        made = db.index_id()
    with open_index_at(p, readonly=True) as db:
        assert made and db.index_id() == made
