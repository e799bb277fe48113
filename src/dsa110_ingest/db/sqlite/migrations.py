"""Named forward migrations, each in its own transaction, version in PRAGMA user_version.

The version is bumped inside the migration's transaction, so a migration killed half
way leaves the previous version and is simply run again on the next open.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dsa110_ingest.db.sqlite.connection import transaction
from dsa110_ingest.errors import DatabaseError


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path | str, migrations: Sequence[Migration]) -> int:
    """Bring the DB to the newest version; returns the number of migrations applied."""
    current = schema_version(conn)
    if current > len(migrations):
        raise DatabaseError(
            f"database {path} has schema version {current}, newer than this program knows "
            f"({len(migrations)}); upgrade dsa110-ingest or point at the right database"
        )
    applied = 0
    for version, m in enumerate(migrations, start=1):
        if version <= current:
            continue
        with transaction(conn, path, f"migrating to version {version} ({m.name})"):
            # another process may have migrated while we waited for the write lock
            if schema_version(conn) >= version:
                continue
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            m.apply(conn)
            conn.execute(
                "INSERT OR REPLACE INTO schema_migrations VALUES (?, ?, ?)",
                (version, m.name, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {version}")
            applied += 1
    return applied


def script(sql: str) -> Callable[[sqlite3.Connection], None]:
    """A migration made of plain statements (executescript would COMMIT our transaction)."""

    def run(conn: sqlite3.Connection) -> None:
        for stmt in sql.split(";"):
            if stmt.strip():
                conn.execute(stmt)

    return run
