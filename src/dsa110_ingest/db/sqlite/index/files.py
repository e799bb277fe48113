"""The SQLite index's storage locations, file rows and rejected files."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
_UPSERT_FILE = (
    f"INSERT INTO hdf5_file_index ({FILE_COLS}) "
    f"VALUES ({', '.join(':' + c for c in FILE_COLUMNS)}) "
    "ON CONFLICT(path) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in FILE_COLUMNS if c != "path")
)
_INSERT_FILE_IF_NEW = (
    f"INSERT INTO hdf5_file_index ({FILE_COLS}) "
    f"VALUES ({', '.join(':' + c for c in FILE_COLUMNS)}) ON CONFLICT(path) DO NOTHING"
)
LOCATION_COLS = ", ".join(field_names(Location))
_REJECTED_COLS = ", ".join(field_names(RejectedFile))


def _file(row: Sequence[Any] | None) -> FileRecord | None:
    return None if row is None else FileRecord(*row)


class SqliteFiles(FileStore):
    """The files family of :class:`~dsa110_ingest.db.sqlite.index.SqliteIndexStore`: its
    methods only; the attributes below are set by that class's ``__init__``."""

    conn: sqlite3.Connection
    _location_cols: str

    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        with self.transaction(f"registering storage location {name}"):
            row = self.conn.execute(
                "SELECT id FROM storage_locations WHERE name = ? OR path = ? "
                "ORDER BY (name = ?) DESC LIMIT 1",
                (name, path, name),
            ).fetchone()
            if row:
                self.conn.execute(
                    "UPDATE storage_locations SET name = ?, path = ?, role = ?, description = ?, "
                    "node = ? WHERE id = ?",
                    (name, path, role, description, node, row[0]),
                )
                return int(row[0])
            cur = self.conn.execute(
                "INSERT INTO storage_locations (name, path, role, description, node) "
                "VALUES (?,?,?,?,?)",
                (name, path, role, description, node),
            )
            return int(cur.lastrowid or 0)

    def locations(self, node: str | None = None) -> list[Location]:
        q = f"SELECT {self._location_cols} FROM storage_locations"
        args: tuple[str, ...] = ()
        if node is not None:
            q += " WHERE node = ?"
            args = (node,)
        return [Location(*r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        rows = self.conn.execute(
            "SELECT path, file_size_bytes, mtime_ns, stored FROM hdf5_file_index "
            "WHERE storage_location_id = ?",
            (location_id,),
        )
        return {r[0]: KnownFile(r[1], r[2], r[3]) for r in rows}

    def known_rejected(self) -> dict[str, KnownFile]:
        rows = self.conn.execute("SELECT path, file_size_bytes, mtime_ns FROM rejected_files")
        return {r[0]: KnownFile(r[1], r[2], 0) for r in rows}

    def get_file(self, path: str) -> FileRecord | None:
        return _file(
            self.conn.execute(
                f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE path = ?", (path_text(path),)
            ).fetchone()
        )

    def files_named(self, filename: str) -> list[FileRecord]:
        return [
            FileRecord(*r)
            for r in self.conn.execute(
                f"SELECT {FILE_COLS} FROM hdf5_file_index WHERE filename = ?", (filename,)
            )
        ]

    def upsert_file(self, row: Mapping[str, Any]) -> None:
        self.conn.execute(_UPSERT_FILE, {c: row.get(c) for c in FILE_COLUMNS})

    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        cur = self.conn.execute(_INSERT_FILE_IF_NEW, {c: row.get(c) for c in FILE_COLUMNS})
        return cur.rowcount == 1

    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        self.conn.execute("DELETE FROM rejected_files WHERE path = ?", (new,))
        self.conn.execute(
            "UPDATE hdf5_file_index SET path = ?, storage_location_id = ?, stored = 1, "
            "file_size_bytes = ?, modified_time = ?, mtime_ns = ? WHERE path = ?",
            (new, location_id, size, mtime, mtime_ns, old),
        )

    def mark_missing(self, paths: Iterable[str]) -> int:
        groups: list[str | None] = []
        for p in paths:
            groups += [
                r[0]
                for r in self.conn.execute(
                    "UPDATE hdf5_file_index SET stored = 0 WHERE path = ? AND stored = 1 "
                    "RETURNING group_id",
                    (path_text(p),),
                )
            ]
        # a group still collecting no longer counts the subband that left, so it cannot
        # complete without it; a group already complete keeps its count (its event was
        # sent, and its conversion names the missing file)
        for gid in {g for g in groups if g is not None}:
            self.conn.execute(
                "UPDATE groups SET n_subbands = (SELECT COUNT(DISTINCT subband_num) "
                "FROM hdf5_file_index WHERE group_id = :g AND is_duplicate = 0 AND stored = 1) "
                "WHERE group_id = :g AND state IN ('collecting', 'incomplete')",
                {"g": gid},
            )
        return len(groups)

    def set_conflict(self, path: str, conflict: bool) -> None:
        self.conn.execute(
            "UPDATE hdf5_file_index SET is_duplicate = ? WHERE path = ?", (int(conflict), path)
        )

    def all_paths(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT path FROM hdf5_file_index")}

    def paths_on_disk(self) -> list[str]:
        return [
            r[0] for r in self.conn.execute("SELECT path FROM hdf5_file_index WHERE stored = 1")
        ]

    def path_groups(self) -> dict[str, str | None]:
        return dict(self.conn.execute("SELECT path, group_id FROM hdf5_file_index").fetchall())

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
        self.conn.execute(
            "INSERT INTO rejected_files (path, reason, detail, file_size_bytes, mtime_ns, "
            "first_seen_at, last_seen_at, attempts, storage_location_id, path_bytes) "
            "VALUES (?,?,?,?,?,?,?,1,?,?) ON CONFLICT(path) DO UPDATE SET reason = excluded.reason,"
            " detail = excluded.detail, file_size_bytes = excluded.file_size_bytes, "
            "mtime_ns = excluded.mtime_ns, last_seen_at = excluded.last_seen_at, "
            "attempts = rejected_files.attempts + 1",
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
        self.conn.execute("DELETE FROM rejected_files WHERE path = ?", (path_text(path),))

    def rejected(self) -> list[RejectedFile]:
        return [
            RejectedFile(*r)
            for r in self.conn.execute(
                f"SELECT {_REJECTED_COLS} FROM rejected_files ORDER BY last_seen_at DESC"
            )
        ]
