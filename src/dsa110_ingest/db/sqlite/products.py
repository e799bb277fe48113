"""The SQLite products store: ``ms_index``. Never holds ``hdf5_file_index`` (except the
legacy one upstream left there, read once by ``migrate``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.records import MS_COLUMNS, PRODUCTS_COPY_TABLES, MsRecord
from dsa110_ingest.db.sqlite import copy
from dsa110_ingest.db.sqlite.connection import backup, connect, transaction, translate
from dsa110_ingest.db.sqlite.migrations import migrate
from dsa110_ingest.db.sqlite.schema import PRODUCTS_MIGRATIONS
from dsa110_ingest.db.store import ProductsStore

_UPSERT = (
    f"INSERT INTO ms_index ({', '.join(MS_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in MS_COLUMNS)}) ON CONFLICT(path) DO UPDATE SET "
    # upstream's rule: an upsert never replaces a known value with NULL
    + ", ".join(f"{c} = COALESCE(excluded.{c}, ms_index.{c})" for c in MS_COLUMNS if c != "path")
)


class SqliteProductsStore(ProductsStore):
    """The products DB in one SQLite file. One owner thread per instance."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.conn = connect(self.path, readonly=readonly)
        if not readonly:
            migrate(self.conn, self.path, PRODUCTS_MIGRATIONS)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteProductsStore:
        return self

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        with transaction(self.conn, self.path, doing):
            yield

    def dbapi_connection(self) -> sqlite3.Connection:
        return self.conn

    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.conn, PRODUCTS_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.conn, PRODUCTS_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        return copy.import_rows(self.conn, PRODUCTS_COPY_TABLES, table, rows)

    def upsert_ms(self, row: Mapping[str, Any]) -> None:
        with self.transaction(f"recording MS {row.get('path')}"):
            self.conn.execute(_UPSERT, {c: row.get(c) for c in MS_COLUMNS})

    def _ms_rows(self, where: str, args: tuple[Any, ...]) -> list[MsRecord]:
        # SELECT *: a read-only open of an upstream products DB (``migrate`` reads one
        # before migrating it) may lack some columns; they read as None
        cur = self.conn.execute(f"SELECT * FROM ms_index {where}", args)
        names = [d[0] for d in cur.description]
        out = []
        for r in cur:
            have = dict(zip(names, r, strict=True))
            out.append(MsRecord(**{c: have.get(c) for c in MS_COLUMNS}))
        return out

    def ms(self, path: str) -> MsRecord | None:
        rows = self._ms_rows("WHERE path = ?", (path,))
        return rows[0] if rows else None

    def all_ms(self) -> list[MsRecord]:
        return self._ms_rows("ORDER BY mid_mjd", ())

    def set_status(self, path: str, status: str, now: float) -> None:
        with self.transaction(f"setting status of {path}"):
            self.conn.execute(
                "UPDATE ms_index SET status = ?, stage_updated_at = ? WHERE path = ?",
                (status, now, path),
            )

    def delete(self, path: str) -> None:
        with self.transaction(f"deleting row {path}"):
            self.conn.execute("DELETE FROM ms_index WHERE path = ?", (path,))

    # -- the legacy hdf5_file_index that upstream kept here (read by `migrate`) -------
    def legacy_columns(self) -> list[str]:
        return [r[1] for r in self.conn.execute("PRAGMA table_info(hdf5_file_index)")]

    def legacy_rows(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM hdf5_file_index")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def finish_migration(self, group_ids: dict[str, str], drop_legacy: bool) -> None:
        """Fill ms_index.group_id where unknown, and drop the legacy table, in one transaction."""
        with self.transaction("finishing the migration"):
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
        try:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as e:
            raise translate(e, self.path, "checking integrity") from None

    def has_table(self, name: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
            is not None
        )
