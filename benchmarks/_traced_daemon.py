"""The unmodified daemon with timers around its hot path, for ``live_latency.py``.

    DSA110_TRACE=trace.jsonl python benchmarks/_traced_daemon.py run

Writes one JSON line per batch the run loop indexes, following each file through every
hand-over: the inotify read that carried its finishing event (kernel -> watchdog), the
watchdog emitter turning it into an event, our handler (``seen``), the run loop taking
the batch, the stat and unchanged check, the header read (a round trip to the reader
process), and each transaction split into BEGIN, body and COMMIT (with the sync of the
WAL when it wrote an event, timed on its own: the event is visible from the COMMIT
on). Also one
line per span of other work on the daemon's threads longer than 1 ms (heartbeat,
reconcile, group expiry, mount and location checks, the garbage collector; and on its
own thread the event-id floor's writes), so that a slow file can be matched with what
stalled it. Only wrappers are
added; no code path of the daemon changes.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from watchdog.observers import inotify as wd_inotify
from watchdog.observers import inotify_c as wd_inotify_c

from dsa110_ingest import cli
from dsa110_ingest.db.sqlite import connection as sqlite_conn
from dsa110_ingest.db.sqlite import index as hdf5_db
from dsa110_ingest.ingest import indexer, lifecycle, placement, reader, watcher
from dsa110_ingest.service import daemon, health, runtime, work

_out = open(os.environ["DSA110_TRACE"], "a", buffering=1)  # noqa: SIM115
_lock = threading.Lock()
_cur: dict[str, Any] = {}
# basename -> when the inotify read carrying its last finishing event returned
_kernel: dict[str, float] = {}
# path -> when watchdog's emitter thread built the event for it
_grouped: dict[str, float] = {}
_FINISHING = (
    wd_inotify_c.InotifyConstants.IN_CLOSE_WRITE
    | wd_inotify_c.InotifyConstants.IN_MOVED_TO
    | wd_inotify_c.InotifyConstants.IN_CREATE
)


def _write(rec: dict[str, Any]) -> None:
    with _lock:
        _out.write(json.dumps(rec) + "\n")


def _runq() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _span(
    what: str, t0: float, t1: float, cpu: float | None = None, runq: float | None = None
) -> None:
    if t1 - t0 >= 0.001:
        rec = {"k": "span", "what": what, "t0": t0, "t1": t1, "thread": threading.get_ident()}
        if cpu is not None:
            # the thread's own CPU, and its wait for a CPU: the rest of the wall time it
            # was blocked (I/O, a lock, the GIL)
            rec["cpu"], rec["runq"] = cpu, runq
        _write(rec)


def _timed(what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0, c0, q0 = time.time(), time.thread_time(), _runq()
        try:
            return fn(*a, **kw)
        finally:
            _span(what, t0, time.time(), time.thread_time() - c0, _runq() - q0)

    return wrapper


# -- watchdog: kernel read, and the emitter's hand-over ---------------------------------
_orig_read_events = wd_inotify_c.InotifyFD.read_events


def _read_events(self: Any, *a: Any, **kw: Any) -> Any:
    events = _orig_read_events(self, *a, **kw)
    t = time.time()
    for e in events:
        if e.mask & _FINISHING and e.name:
            _kernel[os.fsdecode(e.name)] = t
    return events


_orig_build = wd_inotify.InotifyEmitter.build_and_queue_event


def _build(self: Any, event: Any, *, full_events: bool = False) -> None:
    t = time.time()
    pev = event if isinstance(event, wd_inotify.PathedInotifyEvent) else event[1]
    if pev.ev.mask & _FINISHING:
        _grouped[os.fsdecode(pev.path)] = t
    _orig_build(self, event, full_events=full_events)


# -- the run loop's batch ---------------------------------------------------------------
_orig_index = work.Work.index
_orig_read_many = reader.HeaderReader.read_many
_orig_tx = hdf5_db.transaction
_orig_complete = placement.Placer._complete


def _index(self: work.Work, items: list) -> None:
    start = time.time()
    paths = [it.path for it in items]
    _cur.clear()
    _cur.update(
        k="batch",
        start=start,
        seen={it.path: it.seen_at for it in items},
        kernel={p: _kernel.pop(os.path.basename(p), None) for p in paths},
        grouped={p: _grouped.pop(p, None) for p in paths},
        read={},
        tx=[],
        complete=0.0,
    )
    c0, q0 = time.thread_time(), _runq()
    _orig_index(self, items)
    _cur["end"] = time.time()
    _cur["cpu"], _cur["runq"] = time.thread_time() - c0, _runq() - q0
    _write(dict(_cur))
    _cur.clear()


def _read_many(self: reader.HeaderReader, paths: Sequence[str]) -> Iterator[Any]:
    t0 = time.time()
    for p, r in zip(paths, _orig_read_many(self, paths), strict=True):
        if "read" in _cur:
            _cur["read"][p] = (t0, time.time())
        yield r


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
    t3 = time.time()
    if "tx" in _cur:
        _cur["tx"].append((doing, t0, t1, t2, t3))
    else:
        _span(f"tx: {doing}", t0, t3)


_orig_sync = sqlite_conn._sync


def _sync(conn: sqlite3.Connection, path: Path | str, doing: str) -> None:
    # the WAL's fdatasync after an event's COMMIT: timed apart, since the event is
    # visible to other connections from the COMMIT on, before this sync ends
    t0 = time.time()
    try:
        _orig_sync(conn, path, doing)  # type: ignore[arg-type]
    finally:
        t1 = time.time()
        if "tx" in _cur:
            _cur.setdefault("sync", []).append((t0, t1))
        else:
            _span("WAL sync (event commit)", t0, t1)


def _complete(self: placement.Placer, *args: Any) -> None:
    t0 = time.perf_counter()
    _orig_complete(self, *args)
    if "complete" in _cur:
        _cur["complete"] += time.perf_counter() - t0


_gc_t0: dict[int, float] = {}


def _gc(phase: str, info: dict[str, Any]) -> None:
    tid = threading.get_ident()
    if phase == "start":
        _gc_t0[tid] = time.time()
    elif tid in _gc_t0:
        _span(f"gc gen{info.get('generation')}", _gc_t0.pop(tid), time.time())


wd_inotify_c.InotifyFD.read_events = _read_events  # type: ignore[method-assign]
wd_inotify.InotifyEmitter.build_and_queue_event = _build  # type: ignore[method-assign]
work.Work.index = _index  # type: ignore[method-assign]
reader.HeaderReader.read_many = _read_many  # type: ignore[method-assign,assignment]
hdf5_db.transaction = _tx
sqlite_conn._sync = _sync
placement.Placer._complete = _complete  # type: ignore[method-assign]
for _cls, _name in [
    (health.Health, "beat"),
    (work.Work, "reconcile"),
    (daemon, "rearm_changed"),  # the mount check, as the loop calls it
    (runtime.Runtime, "note_event_ids"),
    (runtime.Runtime, "_write_floor"),  # the floor writer's own thread
    (work.Work, "retry_locked"),
    (indexer.Indexer, "expire_groups"),
    (watcher.Watcher, "check_locations"),
    # the parts of the periodic work, to tell its transaction from the rest
    (lifecycle.Expiry, "_expired"),
    (lifecycle.Expiry, "_mark_incomplete"),
    (health.Health, "_write_heartbeat"),
    (health.Health, "refresh_gauges"),
    (health.Health, "db_lost"),
]:
    setattr(_cls, _name, _timed(_name, getattr(_cls, _name)))
gc.callbacks.append(_gc)

if __name__ == "__main__":
    raise SystemExit(cli.main(sys.argv[1:]))
