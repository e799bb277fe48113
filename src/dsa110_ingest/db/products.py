"""The products (output) database: ``ms_index``. Never holds ``hdf5_file_index``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.connection import backup, connect, transaction
from dsa110_ingest.db.migrations import Migration, migrate

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS ms_index (
    path TEXT PRIMARY KEY,
    start_mjd REAL,
    end_mjd REAL,
    mid_mjd REAL,
    processed_at REAL,
    status TEXT,
    stage TEXT,
    stage_updated_at REAL,
    cal_applied INTEGER DEFAULT 0,
    imagename TEXT
);
ALTER TABLE ms_index ADD COLUMN ra_deg REAL;
ALTER TABLE ms_index ADD COLUMN dec_deg REAL;
ALTER TABLE ms_index ADD COLUMN group_id TEXT;
ALTER TABLE ms_index ADD COLUMN n_subbands INTEGER;
ALTER TABLE ms_index ADD COLUMN missing_subbands TEXT;
ALTER TABLE ms_index ADD COLUMN n_channels INTEGER;
ALTER TABLE ms_index ADD COLUMN freq_min_hz REAL;
ALTER TABLE ms_index ADD COLUMN freq_max_hz REAL;
CREATE INDEX IF NOT EXISTS ix_ms_group ON ms_index(group_id);
CREATE INDEX IF NOT EXISTS ix_ms_mid ON ms_index(mid_mjd)
"""

MS_COLUMNS = (
    "path",
    "start_mjd",
    "end_mjd",
    "mid_mjd",
    "processed_at",
    "status",
    "stage",
    "stage_updated_at",
    "cal_applied",
    "imagename",
    "ra_deg",
    "dec_deg",
    "group_id",
    "n_subbands",
    "missing_subbands",
    "n_channels",
    "freq_min_hz",
    "freq_max_hz",
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Upstream deployments have ms_index with some of these columns already: add the rest."""
    conn.execute(SCHEMA_V1.split(";")[0])
    have = {r[1] for r in conn.execute("PRAGMA table_info(ms_index)")}
    for stmt in SCHEMA_V1.split(";")[1:]:
        stmt = stmt.strip()
        if stmt.startswith("ALTER"):
            col = stmt.split("ADD COLUMN")[1].split()[0]
            if col in have:
                continue
        conn.execute(stmt)


MIGRATIONS: tuple[Migration, ...] = (Migration("ms_index", _add_missing_columns),)

_UPSERT = (
    f"INSERT INTO ms_index ({', '.join(MS_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in MS_COLUMNS)}) ON CONFLICT(path) DO UPDATE SET "
    # upstream's rule: an upsert never replaces a known value with NULL
    + ", ".join(f"{c} = COALESCE(excluded.{c}, ms_index.{c})" for c in MS_COLUMNS if c != "path")
)


class ProductsDB:
    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.conn = connect(self.path, readonly=readonly)
        if not readonly:
            migrate(self.conn, self.path, MIGRATIONS)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ProductsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self, doing: str) -> Iterator[ProductsDB]:
        with transaction(self.conn, self.path, doing):
            yield self

    def upsert_ms(self, row: dict[str, Any]) -> None:
        with self.tx(f"recording MS {row.get('path')}"):
            self.conn.execute(_UPSERT, {c: row.get(c) for c in MS_COLUMNS})

    def ms(self, path: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM ms_index WHERE path = ?", (path,)).fetchone()

    def all_ms(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM ms_index ORDER BY mid_mjd").fetchall()

    def set_status(self, path: str, status: str, now: float) -> None:
        with self.tx(f"setting status of {path}"):
            self.conn.execute(
                "UPDATE ms_index SET status = ?, stage_updated_at = ? WHERE path = ?",
                (status, now, path),
            )

    def delete(self, path: str) -> None:
        with self.tx(f"deleting row {path}"):
            self.conn.execute("DELETE FROM ms_index WHERE path = ?", (path,))

    # -- the legacy hdf5_file_index that upstream kept here (read by `migrate`) -------
    def legacy_columns(self) -> list[str]:
        return [r[1] for r in self.conn.execute("PRAGMA table_info(hdf5_file_index)")]

    def legacy_rows(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM hdf5_file_index").fetchall()

    def finish_migration(self, group_ids: dict[str, str], drop_legacy: bool) -> None:
        """Fill ms_index.group_id where unknown, and drop the legacy table, in one transaction."""
        with self.tx("finishing the migration"):
            for path, gid in group_ids.items():
                self.conn.execute(
                    "UPDATE ms_index SET group_id = ? WHERE path = ? AND group_id IS NULL",
                    (gid, path),
                )
            if drop_legacy:
                self.conn.execute("DROP TABLE IF EXISTS hdf5_file_index")

    def backup_to(self, dest: Path) -> None:
        backup(self.conn, dest)

    def integrity(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def has_table(self, name: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
            is not None
        )
