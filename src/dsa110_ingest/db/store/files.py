"""The file index: storage locations, indexed files, rejected files."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any

from dsa110_ingest.db.records import FileRecord, KnownFile, Location, RejectedFile
from dsa110_ingest.db.store.base import Store


class FileStore(Store):
    """Where files live (storage locations), what the index knows of each file, and the
    files it could not index. A file no longer on disk is *missing* (``stored`` = 0)."""

    @abc.abstractmethod
    def ensure_location(
        self, name: str, path: str, role: str, description: str = "", *, node: str = ""
    ) -> int:
        """*Own transaction.* The id of the storage location called ``name`` or at
        ``path`` (a rename or a move keeps the id, preferring the one matching ``name``),
        created when neither exists, its path, role, description and node updated."""

    @abc.abstractmethod
    def locations(self, node: str | None = None) -> list[Location]:
        """Storage locations by id; with ``node``, only those of that node."""

    @abc.abstractmethod
    def known_files(self, location_id: int) -> dict[str, KnownFile]:
        """Size, mtime and stored flag of every indexed path under one location."""

    @abc.abstractmethod
    def known_rejected(self) -> dict[str, KnownFile]:
        """Size and mtime of every rejected path (``stored`` is 0)."""

    @abc.abstractmethod
    def get_file(self, path: str) -> FileRecord | None:
        """The file row of ``path`` (escaped like the index does), or None."""

    @abc.abstractmethod
    def files_named(self, filename: str) -> list[FileRecord]:
        """Every file row with this base name (the same file in several places)."""

    @abc.abstractmethod
    def upsert_file(self, row: Mapping[str, Any]) -> None:
        """*Inside a transaction.* Insert or replace the file row keyed by
        ``row["path"]``; keys are :data:`~dsa110_ingest.db.records.FILE_COLUMNS`, a
        missing key is NULL."""

    @abc.abstractmethod
    def insert_file_if_new(self, row: Mapping[str, Any]) -> bool:
        """*Inside a transaction.* Like :meth:`upsert_file` but leaves an existing row
        alone; True when a row was inserted."""

    @abc.abstractmethod
    def move_file(
        self, old: str, new: str, location_id: int, size: int, mtime: float, mtime_ns: int
    ) -> None:
        """*Inside a transaction.* The file at ``old`` is now at ``new`` (a rename seen
        by the watcher): its row follows, stored again, and a rejection of ``new`` is
        forgotten."""

    @abc.abstractmethod
    def mark_missing(self, paths: Iterable[str]) -> int:
        """*Inside a transaction.* Set ``stored = 0`` on these paths and take them out of
        the subband count of their groups that are still collecting (or incomplete);
        returns how many rows changed (already-missing ones do not count)."""

    @abc.abstractmethod
    def set_conflict(self, path: str, conflict: bool) -> None:
        """*Inside a transaction.* Take a member out of its group's subband count (a
        conflict: another file holds its subband) or back into it (``is_duplicate``)."""

    @abc.abstractmethod
    def all_paths(self) -> set[str]:
        """Every indexed path."""

    @abc.abstractmethod
    def paths_on_disk(self) -> list[str]:
        """Every indexed path still on disk (``stored = 1``)."""

    @abc.abstractmethod
    def path_groups(self) -> dict[str, str | None]:
        """Path -> group id for every indexed file."""

    @abc.abstractmethod
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
        """*Inside a transaction.* Record (or refresh, counting attempts) why ``path``
        cannot be indexed; a non-UTF-8 name keeps its exact bytes in ``path_bytes``."""

    @abc.abstractmethod
    def unreject(self, path: str) -> None:
        """*Inside a transaction.* Forget the rejection of ``path`` (it indexed now)."""

    @abc.abstractmethod
    def rejected(self) -> list[RejectedFile]:
        """Rejected files, most recently seen first."""
