"""What every store has: a name for messages, closing, transactions, backups, copying."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Store(abc.ABC):
    """What both stores share: a name for messages, closing, transactions, backups."""

    #: the database for messages: a file path, or a URI without its password
    name: str

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection(s). The store is unusable afterwards."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    @contextmanager
    def transaction(self, doing: str = "writing") -> Iterator[None]:
        """Group writes: all of them commit at the end of the block, or none does when
        it raises. ``doing`` names the work in error messages ("indexing 3 file(s)").
        Writers serialise here (SQLite: BEGIN IMMEDIATE), so a transaction never fails
        half way for lack of a lock. Not re-entrant."""
        yield

    @abc.abstractmethod
    def dbapi_connection(self) -> Any:
        """The underlying DB-API connection. Only for the seed document's
        ``ensure_hdf5_db``/``ensure_products_db`` (which promise a connection) and for
        schema checks in tests; the pipeline never touches it."""

    @abc.abstractmethod
    def integrity(self) -> str:
        """``"ok"`` when the backend's own consistency check passes, else its report."""

    @abc.abstractmethod
    def backup_to(self, dest: Path) -> None:
        """A consistent copy of the live database written to ``dest`` (a local file in
        the backend's own dump format; SQLite: a database file)."""

    # -- copying a whole store into another backend (``migrate --to``) ------------------
    # ``table`` is a key of records.INDEX_COPY_TABLES / PRODUCTS_COPY_TABLES; rows are the
    # record class named there, keyed by the field named there.
    @abc.abstractmethod
    def export_rows(self, table: str, after: Any = None, limit: int = 1000) -> list[Any]:
        """Rows of ``table`` whose key is greater than ``after`` (None: from the first),
        by key, at most ``limit``: keyset paging through a table of any size."""

    @abc.abstractmethod
    def rows_by_key(self, table: str, keys: Sequence[Any]) -> dict[Any, Any]:
        """The rows of ``table`` whose key is one of ``keys``, by key (absent: absent)."""

    @abc.abstractmethod
    def import_rows(self, table: str, rows: Sequence[Any]) -> int:
        """*Inside a transaction.* Insert the rows with their keys and ids as they are,
        leaving alone every row whose key already exists; returns how many were inserted.
        Id counters (``events.id``, ``storage_locations.id``) end at or above the largest
        id imported, so the next event or location never collides with a copied one."""
