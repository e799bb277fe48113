"""The products store on PostgreSQL: ``ms_index``.

A PostgreSQL products database is made by this project, never by upstream, so it has no
legacy ``hdf5_file_index`` (opening one that holds it is refused, see ``schema.py``): the
legacy methods look and find nothing, and ``migrate`` reads legacy rows from SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsa110_ingest.db.postgres import copy
from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.postgres.maintenance import dump_database, integrity_report
from dsa110_ingest.db.postgres.schema import PRODUCTS_MIGRATIONS, PRODUCTS_TABLES
from dsa110_ingest.db.records import MS_COLUMNS, PRODUCTS_COPY_TABLES, MsRecord
from dsa110_ingest.db.store import ProductsStore

_MS_COLS = ", ".join(MS_COLUMNS)
_UPSERT = (
    f"INSERT INTO ms_index ({_MS_COLS}) VALUES ({', '.join(f'%({c})s' for c in MS_COLUMNS)}) "
    "ON CONFLICT (path) DO UPDATE SET "
    # upstream's rule: an upsert never replaces a known value with NULL
    + ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, ms_index.{c})" for c in MS_COLUMNS if c != "path")
)


class PostgresProductsStore(ProductsStore):
    """The products DB in a PostgreSQL database. One owner thread per instance."""

    def __init__(self, uri: str, *, readonly: bool = False) -> None:
        self.c = PgConnection(uri, "products", PRODUCTS_MIGRATIONS, readonly=readonly)
        self.uri = uri
        self.name = self.c.name

    def close(self) -> None:
        self.c.close()

    def __enter__(self) -> PostgresProductsStore:
        return self

    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        with self.c.transaction(doing):
            yield

    def dbapi_connection(self) -> Any:
        return self.c.live()

    def upsert_ms(self, row: Mapping[str, Any]) -> None:
        with self.transaction(f"recording MS {row.get('path')}"):
            self.c.x(_UPSERT, {c: row.get(c) for c in MS_COLUMNS})

    def ms(self, path: str) -> MsRecord | None:
        row = self.c.first(f"SELECT {_MS_COLS} FROM ms_index WHERE path = %s", (path,))
        return None if row is None else MsRecord(*row)

    def all_ms(self) -> list[MsRecord]:
        # NULLS FIRST: SQLite's order for rows without a time
        rows = self.c.all(f"SELECT {_MS_COLS} FROM ms_index ORDER BY mid_mjd NULLS FIRST, path")
        return [MsRecord(*r) for r in rows]

    def set_status(self, path: str, status: str, now: float) -> None:
        with self.transaction(f"setting status of {path}"):
            self.c.x(
                "UPDATE ms_index SET status = %s, stage_updated_at = %s WHERE path = %s",
                (status, now, path),
            )

    def delete(self, path: str) -> None:
        with self.transaction(f"deleting row {path}"):
            self.c.x("DELETE FROM ms_index WHERE path = %s", (path,))

    # -- copying the whole products DB (``migrate --to``) ----------------------------------
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        return copy.export_rows(self.c, PRODUCTS_COPY_TABLES, table, after, limit)

    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        return copy.rows_by_key(self.c, PRODUCTS_COPY_TABLES, table, keys)

    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        return copy.import_rows(self.c, PRODUCTS_COPY_TABLES, table, rows)

    def has_table(self, name: str) -> bool:
        return bool(self.c.value("SELECT to_regclass(%s) IS NOT NULL", (name,)))

    def legacy_columns(self) -> list[str]:
        rows = self.c.all(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'hdf5_file_index' ORDER BY ordinal_position"
        )
        return [r[0] for r in rows]

    def legacy_rows(self) -> list[dict[str, Any]]:
        if not self.has_table("hdf5_file_index"):
            return []
        cur = self.c.x("SELECT * FROM hdf5_file_index")
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def finish_migration(self, group_ids: dict[str, str], drop_legacy: bool) -> None:
        with self.transaction("finishing the migration"):
            if group_ids:
                self.c.executemany(
                    "UPDATE ms_index SET group_id = %s WHERE path = %s AND group_id IS NULL",
                    [(gid, path) for path, gid in group_ids.items()],
                    "filling ms_index.group_id",
                )
            if drop_legacy:
                self.c.x("DROP TABLE IF EXISTS hdf5_file_index")

    def backup_to(self, dest: Path) -> None:
        dump_database(self.uri, self.name, dest)

    def integrity(self) -> str:
        return integrity_report(self.c.live(), self.name, PRODUCTS_TABLES, PRODUCTS_MIGRATIONS)
