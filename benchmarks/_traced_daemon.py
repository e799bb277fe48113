"""The unmodified daemon with timers around its hot path, for ``live_latency.py``.

    DSA110_TRACE=trace.jsonl python benchmarks/_traced_daemon.py run

Writes one JSON line per batch the run loop indexes: when each file's event was seen by
the watcher, when the loop took the batch, each header read, and each transaction split
into BEGIN, body (file row, grouping, group transition, event) and COMMIT (the fsync).
Only wrappers are added; no code path of the daemon changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsa110_ingest import cli, service
from dsa110_ingest.db.sqlite import index as hdf5_db
from dsa110_ingest.ingest import indexer, reader

_out = open(os.environ["DSA110_TRACE"], "a", buffering=1)  # noqa: SIM115
_cur: dict[str, Any] = {}

_orig_index = service.Service._index
_orig_read = reader.read_for_index
_orig_tx = hdf5_db.transaction
_orig_complete = indexer.Indexer._complete


def _index(self: service.Service, items: list) -> None:
    _cur.clear()
    _cur.update(start=time.time(), seen={it.path: it.seen_at for it in items}, read={}, tx=[])
    _cur["complete"] = 0.0
    _orig_index(self, items)
    _cur["end"] = time.time()
    _out.write(json.dumps(_cur) + "\n")


def _read(path: str, locking: str, lock_wait_s: float) -> Any:
    t0 = time.time()
    r = _orig_read(path, locking, lock_wait_s)
    if "read" in _cur:
        _cur["read"][path] = (t0, time.time())
    return r


@contextlib.contextmanager
def _tx(conn: sqlite3.Connection, path: Path | str, doing: str) -> Iterator[None]:
    t0 = time.time()
    cm = _orig_tx(conn, path, doing)
    cm.__enter__()
    t1 = time.time()
    try:
        yield
    except BaseException:
        if not cm.__exit__(*sys.exc_info()):
            raise
        return
    t2 = time.time()
    cm.__exit__(None, None, None)
    if "tx" in _cur:
        _cur["tx"].append((doing, t0, t1, t2, time.time()))


def _complete(self: indexer.Indexer, *args: Any) -> None:
    t0 = time.perf_counter()
    _orig_complete(self, *args)
    if "complete" in _cur:
        _cur["complete"] += time.perf_counter() - t0


service.Service._index = _index  # type: ignore[method-assign]
reader.read_for_index = _read
hdf5_db.transaction = _tx
indexer.Indexer._complete = _complete  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(cli.main(sys.argv[1:]))
