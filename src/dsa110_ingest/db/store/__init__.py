"""The storage interface: one abstract store per database, implemented per backend.

``IndexStore`` is the input database (files, storage locations, groups, events,
conversion jobs, rejected files, heartbeats); ``ProductsStore`` is the output database
(``ms_index``). Get one with :func:`dsa110_ingest.db.open_index` /
:func:`dsa110_ingest.db.open_products`, never by constructing a backend class.

Conventions every backend keeps:

- Rows are the frozen dataclasses of :mod:`dsa110_ingest.db.records`, never driver rows.
- Writes that belong together run in ``with store.transaction("doing what"):``. Methods
  marked *own transaction* open one themselves and must not be called inside another
  (transactions are not re-entrant); methods marked *inside a transaction* only write
  and leave committing to the caller. Reads may be called anywhere.
- Times are unix seconds (float) unless the name says ``mjd``. Paths are text; a file
  name that is not UTF-8 is stored escaped (``naming.path_text``).
- A store is used by one thread at a time; open one store per thread.
- Errors are :class:`dsa110_ingest.errors.DatabaseError` and its subclasses, with the
  database named in the message.

One module per family of tables, so a reader finds one concept per module:

- ``base``: :class:`Store`, what both stores share;
- ``files``: storage locations, the file index, rejected files (:class:`FileStore`);
- ``groups``: clustering and group state (:class:`GroupStore`);
- ``events``: the outbox (:class:`EventStore`);
- ``jobs``: conversion jobs (:class:`JobStore`);
- ``nodes``: notes, counts, heartbeats, the node lock (:class:`NodeStore`);
- ``index``: :class:`IndexStore`, all of the above; ``products``: :class:`ProductsStore`.
"""

from __future__ import annotations

from dsa110_ingest.db.store.base import Store
from dsa110_ingest.db.store.events import EventStore
from dsa110_ingest.db.store.files import FileStore
from dsa110_ingest.db.store.groups import GroupStore
from dsa110_ingest.db.store.index import IndexStore
from dsa110_ingest.db.store.jobs import JobStore
from dsa110_ingest.db.store.nodes import NodeStore
from dsa110_ingest.db.store.products import ProductsStore

__all__ = [
    "EventStore",
    "FileStore",
    "GroupStore",
    "IndexStore",
    "JobStore",
    "NodeStore",
    "ProductsStore",
    "Store",
]
