"""Docs stay true: every table and column in the code is in docs/database.md and back."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from dsa110_ingest import ensure_hdf5_db, ensure_products_db

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _documented(section: str) -> dict[str, set[str]]:
    # the PostgreSQL section describes the same tables (tests/db/postgres/test_schema.py)
    text = (DOCS / "database.md").read_text().split("\n## PostgreSQL backend")[0]
    part = text.split("## Products (output) database")[0 if section == "hdf5" else 1]
    tables: dict[str, set[str]] = {}
    current = None
    for line in part.splitlines():
        if m := re.match(r"### (\w+)", line):
            current = m.group(1)
            tables[current] = set()
        elif current and (m := re.match(r"\| `(\w+)` \|", line)):
            tables[current].add(m.group(1))
    return tables


def _actual(conn: sqlite3.Connection) -> dict[str, set[str]]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in names}


def test_hdf5_schema_matches_docs(tmp_path: Path) -> None:
    actual = _actual(ensure_hdf5_db(tmp_path / "h.sqlite3"))
    doc = _documented("hdf5")
    doc["schema_migrations"] = doc.get("schema_migrations") or set()
    assert set(actual) == set(doc)
    for table, cols in actual.items():
        assert cols == doc[table], table


def test_products_schema_matches_docs(tmp_path: Path) -> None:
    actual = _actual(ensure_products_db(tmp_path / "p.sqlite3"))
    doc = _documented("products")
    doc["schema_migrations"] = {"version", "name", "applied_at"}
    assert set(actual) == set(doc)
    for table, cols in actual.items():
        assert cols == doc[table], table


def test_readme_links_the_docs() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    for doc in (
        "architecture.md",
        "database.md",
        "operations.md",
        "migration.md",
        "performance.md",
        "reliability.md",
    ):
        assert f"docs/{doc}" in readme, doc
        assert (DOCS / doc).exists(), doc
