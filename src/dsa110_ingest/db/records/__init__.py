"""The rows the stores hand out: frozen dataclasses, the same for every backend.

Field names are the column names, so a backend maps a row with ``Record(**row)`` and a
caller reads ``row.group_id``. Nothing here knows SQL or a driver; the pipeline's own
types that the stores traffic in (``GroupSpan``) live here too, so that ``db/`` needs
nothing from the pipeline. One module per family of tables (``files``, ``groups``,
``events``, ``jobs``, ``nodes``, ``products``) and ``copying`` for ``migrate --to``;
every name is importable from this package.
"""

from __future__ import annotations

from dsa110_ingest.db.records.copying import (
    INDEX_COPY_TABLES,
    PRODUCTS_COPY_TABLES,
    copy_record,
    copy_spec,
    copy_values,
    field_names,
)
from dsa110_ingest.db.records.events import Event
from dsa110_ingest.db.records.files import (
    FILE_COLUMNS,
    FileRecord,
    KnownFile,
    Location,
    MemberFile,
    RejectedFile,
)
from dsa110_ingest.db.records.groups import (
    GROUP_COLUMNS,
    Group,
    GroupSpan,
    GroupSummary,
    SubbandGroup,
)
from dsa110_ingest.db.records.jobs import JOB_COLUMNS, ConversionJob
from dsa110_ingest.db.records.nodes import INDEX_ID_KEY, Heartbeat, IndexCounts, MetaEntry
from dsa110_ingest.db.records.products import MS_COLUMNS, MsRecord

__all__ = [
    "FILE_COLUMNS",
    "GROUP_COLUMNS",
    "INDEX_COPY_TABLES",
    "INDEX_ID_KEY",
    "JOB_COLUMNS",
    "MS_COLUMNS",
    "PRODUCTS_COPY_TABLES",
    "ConversionJob",
    "Event",
    "FileRecord",
    "Group",
    "GroupSpan",
    "GroupSummary",
    "Heartbeat",
    "IndexCounts",
    "KnownFile",
    "Location",
    "MemberFile",
    "MetaEntry",
    "MsRecord",
    "RejectedFile",
    "SubbandGroup",
    "copy_record",
    "copy_spec",
    "copy_values",
    "field_names",
]
