"""The index store's interface: every family of the input database in one class."""

from __future__ import annotations

from dsa110_ingest.db.store.events import EventStore
from dsa110_ingest.db.store.files import FileStore
from dsa110_ingest.db.store.groups import GroupStore
from dsa110_ingest.db.store.jobs import JobStore
from dsa110_ingest.db.store.nodes import NodeStore


class IndexStore(FileStore, GroupStore, EventStore, JobStore, NodeStore):
    """The input database. Method names are those the pipeline calls; each family's
    methods are declared (and documented) in its own module of ``db/store/``, and each
    backend implements them in a module of the same name (``db/sqlite/index/``,
    ``db/postgres/index/``)."""
