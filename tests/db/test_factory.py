"""The factory: which backend a path or URI selects, and what a missing driver says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dsa110_ingest.db import backend_of, open_index_at, open_products_at
from dsa110_ingest.errors import ConfigError


@pytest.mark.parametrize(
    ("target", "backend"),
    [
        ("postgresql://ingest@db.example/dsa110", "postgresql"),
        ("postgres://ingest@/dsa110?host=/run/postgresql", "postgresql"),
        ("POSTGRESQL://ingest@db/dsa110", "postgresql"),
        ("/var/lib/dsa110-ingest/hdf5.sqlite3", "sqlite"),
        (Path("relative/hdf5.sqlite3"), "sqlite"),
        ("file:odd-but-a-path.sqlite3", "sqlite"),
    ],
)
def test_backend_of(target: str | Path, backend: str) -> None:
    assert backend_of(target) == backend


def test_a_missing_driver_names_the_extra_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine without the extra
    monkeypatch.delitem(sys.modules, "dsa110_ingest.db.postgres", raising=False)
    for opener in (open_index_at, open_products_at):
        with pytest.raises(ConfigError, match=r"dsa110-ingest\[postgresql\]") as e:
            opener("postgresql://ingest:s3cret@db.example/dsa110")
        assert "s3cret" not in str(e.value) and "ingest@db.example" in str(e.value)


def test_a_path_opens_sqlite(tmp_path: Path) -> None:
    with open_index_at(str(tmp_path / "h.sqlite3")) as db:
        assert db.name == str(tmp_path / "h.sqlite3") and db.integrity() == "ok"
    assert (tmp_path / "h.sqlite3").exists()
