"""The products store's interface: ``ms_index``, one row per Measurement Set."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from dsa110_ingest.db.records import MsRecord
from dsa110_ingest.db.store.base import Store


class ProductsStore(Store):
    """The output database: ``ms_index``, one row per Measurement Set."""

    @abc.abstractmethod
    def upsert_ms(self, row: Mapping[str, Any]) -> None:
        """*Own transaction.* Insert or update the MS row keyed by ``row["path"]``; keys
        are :data:`~dsa110_ingest.db.records.MS_COLUMNS`. A None (or missing key) never
        replaces a known value (upstream's rule)."""

    @abc.abstractmethod
    def ms(self, path: str) -> MsRecord | None:
        """The row of one MS, or None."""

    @abc.abstractmethod
    def all_ms(self) -> list[MsRecord]:
        """Every MS row by ``mid_mjd``."""

    @abc.abstractmethod
    def set_status(self, path: str, status: str, now: float) -> None:
        """*Own transaction.* Set an MS row's status and ``stage_updated_at``."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """*Own transaction.* Remove an MS row."""

    @abc.abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether a table of that name exists (the legacy ``hdf5_file_index`` check)."""

    @abc.abstractmethod
    def legacy_columns(self) -> list[str]:
        """Columns of a legacy ``hdf5_file_index`` kept in the products DB by upstream
        (empty when there is none)."""

    @abc.abstractmethod
    def legacy_rows(self) -> list[dict[str, Any]]:
        """The rows of that legacy table, as column -> value."""

    @abc.abstractmethod
    def finish_migration(self, group_ids: dict[str, str], drop_legacy: bool) -> None:
        """*Own transaction.* Fill ``ms_index.group_id`` where unknown (MS path -> group
        id), and drop the legacy table when ``drop_legacy``."""
