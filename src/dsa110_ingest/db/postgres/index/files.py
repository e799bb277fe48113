"""The PostgreSQL index's storage locations, file rows and rejected files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dsa110_ingest.db.postgres.base import PgConnection
from dsa110_ingest.db.records import (
    FILE_COLUMNS,
    FileRecord,
    KnownFile,
    Location,
    RejectedFile,
    field_names,
)
from dsa110_ingest.db.store.files import FileStore
from dsa110_ingest.naming import path_bytes, path_text

FILE_COLS = ", ".join(FILE_COLUMNS)
_FILE_VALUES = ", ".join(f"%({c})s" for c in FILE_COLUMNS)
_UPSERT_FILE = (
    f"INSERT INTO hdf5_file_index ({FILE_COLS}) VALUES ({_FILE_VALUES}) "
    "ON CONFLICT (path) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in FILE_COLUMNS if c != "path")
)
_INSERT_FILE_IF_NEW = (
    f"INSERT INTO hdf5_file_index ({FILE_COLS}) VALUES ({_FILE_VALUES}) "
    "ON CONFLICT (path) DO NOTHING"
)
_LOCATION_COLS = ", ".join(field_names(Location))
_REJECTED_COLS = ", ".join(field_names(RejectedFile))


class PgFiles(FileStore):
    """The files family of :class:`~dsa110_ingest.db.postgres.index.PostgresIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    c: PgConnection
    _files: tuple[str, list[FileRecord]] | None

    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        with self.transaction(f"registering storage location {name}"):
            found = self.c.value(
                "SELECT id FROM storage_locations WHERE node = %s AND (name = %s OR path = %s) "
                "ORDER BY (name = %s) DESC LIMIT 1 FOR UPDATE",
                (node, name, path, name),
            )
            if found is not None:
                self.c.x(
                    "UPDATE storage_locations SET name = %s, path = %s, role = %s, "
                    "description = %s WHERE id = %s",
                    (name, path, role, description, found),
                )
                return int(found)
            return int(
                self.c.value(
                    "INSERT INTO storage_locations (name, path, role, description, node) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (name, path, role, description, node),
                )
            )

    def locations(self, node: str | None = None) -> list[Location]:
        if node is None:
            rows = self.c.all(f"SELECT {_LOCATION_COLS} FROM storage_locations ORDER BY id")
        else:
            rows = self.c.all(
                f"SELECT {_LOCATION_COLS} FROM storage_locations WHERE node = %s ORDER BY id",
                (node,),
            )
        return [Location(*r) for r in rows]

    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        rows = self.c.all(
            "SELECT path, file_size_bytes, mtime_ns, stored FROM hdf5_file_index "
            "WHERE storage_location_id = %s",
            (location_id,),
        )
        return {r[0]: KnownFile(r[1], r[2], r[3]) for r in rows}

    def known_rejected(self) -> dict[str, KnownFile]:
        rows = self.c.all("SELECT path, file_size_bytes, mtime_ns FROM rejected_files")
        return {r[0]: KnownFile(r[1], r[2], 0) for r in rows}

    def get_file(self, path: str) -> FileRecord | None:
        row = self.c.first(
            f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE path = %s", (path_text(path),)
        )
        return None if row is None else FileRecord(*row)

    def files_named(self, filename: str) -> list[FileRecord]:
        rows = self.c.all(
            f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE filename = %s", (filename,)
        )
        return [FileRecord(*r) for r in rows]

    def upsert_file(self, row: Mapping[str, Any]) -> None:
        self._files = None  # file rows change
        self.c.x(_UPSERT_FILE, {c: row.get(c) for c in FILE_COLUMNS})

    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        self._files = None  # file rows change
        return self.c.count(_INSERT_FILE_IF_NEW, {c: row.get(c) for c in FILE_COLUMNS}) == 1

    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        self._files = None  # file rows change
        self.c.x("DELETE FROM rejected_files WHERE path = %s", (new,))
        self.c.x(
            "UPDATE hdf5_file_index SET path = %s, storage_location_id = %s, stored = 1, "
            "file_size_bytes = %s, modified_time = %s, mtime_ns = %s WHERE path = %s",
            (new, location_id, size, mtime, mtime_ns, old),
        )

    def mark_missing(self, paths: Iterable[str]) -> int:
        self._files = None  # file rows change
        texts = [path_text(p) for p in paths]
        if not texts:
            return 0
        groups = self.c.all(
            "UPDATE hdf5_file_index SET stored = 0 WHERE path = ANY(%s) AND stored = 1 "
            "RETURNING group_id",
            (texts,),
        )
        # as in the SQLite store: a collecting group no longer counts the subband that left
        gids = sorted({g[0] for g in groups if g[0] is not None})
        if gids:
            self.c.x(
                "UPDATE groups SET n_subbands = (SELECT COUNT(DISTINCT f.subband_num) "
                "FROM hdf5_file_index f WHERE f.group_id = groups.group_id "
                "AND f.is_duplicate = 0 AND f.stored = 1) "
                "WHERE group_id = ANY(%s) AND state IN ('collecting', 'incomplete')",
                (gids,),
            )
        return len(groups)

    def set_conflict(self, path: str, conflict: bool) -> None:
        self._files = None  # file rows change
        self.c.x(
            "UPDATE hdf5_file_index SET is_duplicate = %s WHERE path = %s", (int(conflict), path)
        )

    def all_paths(self) -> set[str]:
        return {r[0] for r in self.c.all("SELECT path FROM hdf5_file_index")}

    def paths_on_disk(self) -> list[str]:
        return [r[0] for r in self.c.all("SELECT path FROM hdf5_file_index WHERE stored = 1")]

    def path_groups(self) -> dict[str, str | None]:
        return dict(self.c.all("SELECT path, group_id FROM hdf5_file_index"))  # type: ignore[arg-type]

    def reject(
        self,
        path: str,
        reason: str,
        detail: str,
        size: int | None,
        mtime_ns: int | None,
        location_id: int | None,
        now: float,
    ) -> None:
        self.c.x(
            "INSERT INTO rejected_files (path, reason, detail, file_size_bytes, mtime_ns, "
            "first_seen_at, last_seen_at, attempts, storage_location_id, path_bytes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, %s) ON CONFLICT (path) DO UPDATE SET "
            "reason = EXCLUDED.reason, detail = EXCLUDED.detail, "
            "file_size_bytes = EXCLUDED.file_size_bytes, mtime_ns = EXCLUDED.mtime_ns, "
            "last_seen_at = EXCLUDED.last_seen_at, attempts = rejected_files.attempts + 1",
            (
                path_text(path),
                reason,
                detail,
                size,
                mtime_ns,
                now,
                now,
                location_id,
                path_bytes(path),
            ),
        )

    def unreject(self, path: str) -> None:
        self.c.x("DELETE FROM rejected_files WHERE path = %s", (path_text(path),))

    def rejected(self) -> list[RejectedFile]:
        rows = self.c.all(f"SELECT {_REJECTED_COLS} FROM rejected_files ORDER BY last_seen_at DESC")
        return [RejectedFile(*r) for r in rows]
