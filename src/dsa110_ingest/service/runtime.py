"""Every part of a running daemon, built once from the config, and its staged shutdown.

Built in one go (lock, databases, event-id floor, indexer, watcher, dispatcher, mirror):
a part that cannot be built fails the start with a clear error and whatever was opened
before it is closed again. The parts that may be absent are absent by configuration
(no conversions, no events mirror) or because the node cannot provide them (no mount
table to watch), never because they are not built yet.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.convert.executor import Executor
from dsa110_ingest.db import open_index, open_products
from dsa110_ingest.errors import IngestError
from dsa110_ingest.events import JsonlMirror
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.ingest.watcher import FileEvent, Watcher
from dsa110_ingest.metrics import FdAlarm, Metrics
from dsa110_ingest.nodes import acquire_node, check_locations, state_path
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service.deferral import LockedFiles
from dsa110_ingest.service.loop import out_of_fds
from dsa110_ingest.service.mounts import MountWatch
from dsa110_ingest.service.signals import Flags
from dsa110_ingest.statedir import EventIdFloor, StateLock, ensure_dir

log = structlog.get_logger("dsa110_ingest.service")

# below the unit's TimeoutStopSec=30: the DB is closed and the id floor written before
# systemd's SIGKILL
SHUTDOWN_LIMIT_S = 20.0
DISPATCHER_STOP_S = 10.0


@dataclass
class ServiceHooks:
    """Test seams: fault injection and fake time, never used in production."""

    watch_drop: Callable[[FileEvent], bool] | None = None
    mounts_file: str = "/proc/self/mounts"
    mountinfo_file: str = "/proc/self/mountinfo"
    executor: Executor | None = None
    clock: Callable[[], float] = time.time


@dataclass
class Counters:
    """What this process did since it started (heartbeat, STATUS=, the rescan summary)."""

    indexed: int = 0
    rejected: int = 0
    events: dict[str, int] = field(default_factory=dict)


class FloorWriter:
    """Writes the event-id floor on its own thread.

    A floor write is a write, an fsync and a rename: a few ms after every event on a
    quiet disk, tens of ms on a busy one. On the main thread that held back whichever
    file arrived just after a group completed. The floor only matters once the DB is
    lost, and the DB itself has every id it handed out (event commits are synced), so
    writing it a moment later changes nothing a consumer can see; ``close`` writes the
    last value before the daemon lets go of its state directory.
    """

    RETRY_S = 1.0

    def __init__(self, write: Callable[[int], bool]) -> None:
        self._write = write
        self._cv = threading.Condition()
        self._want = 0
        self._done = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-id-floor", daemon=True)
        self._thread.start()

    def raise_to(self, value: int) -> None:
        with self._cv:
            if value > self._want:
                self._want = value
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._want <= self._done and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                value = self._want
            if self._write(value):
                self._done = max(self._done, value)
            else:
                with self._cv:  # out of descriptors: wait, keep the value
                    self._cv.wait_for(lambda: self._closed, timeout=self.RETRY_S)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        if self._want > self._done and self._write(self._want):
            self._done = self._want


class Runtime:
    def __init__(
        self,
        cfg: Config,
        *,
        convert: bool,
        flags: Flags,
        notifier: Notifier,
        metrics: Metrics,
        hooks: ServiceHooks,
        what: str,
        watch_mounts: bool,
    ) -> None:
        self.cfg = cfg
        self.convert = convert
        self.flags = flags
        self.notifier = notifier
        self.metrics = metrics
        self.hooks = hooks
        self.clock = hooks.clock
        self.started_at = self.clock()
        self.queue: queue.Queue[FileEvent] = queue.Queue()
        self.counters = Counters()
        self.locked = LockedFiles(cfg.watch.locked_retry_max_seconds)
        self.fds = FdAlarm(
            metrics,
            "service.too_many_open_files",
            "work is kept and retried; raise LimitNOFILE= (ulimit -n) if this recurs",
            every_s=10.0,
        )
        self.events_dirty = False  # set by the dispatcher's thread; the floor by this one
        self.lock = StateLock(state_path(cfg))
        with contextlib.ExitStack() as undo:
            self._take_state_dir(what)
            undo.callback(self.lock.release)
            self.db = open_index(cfg)
            undo.callback(self.db.close)
            # one daemon per node name on a shared index; only this node's locations
            acquire_node(self.db, cfg)
            check_locations(self.db, cfg)
            self.db_ident = self._file_identity()
            self.floor = self._restore_id_floor()
            self.floor_writer = FloorWriter(self._write_floor)
            undo.callback(self.floor_writer.close)
            open_products(cfg).close()  # fail now, not at the first conversion
            self.indexer = Indexer(self.db, cfg, clock=self.clock)
            undo.callback(self.indexer.close)
            self.indexer.convert_enabled = cfg.convert.enabled
            self.indexer.reader.on_wait = notifier.watchdog  # hung reads: still alive
            self.indexer.reader.start()  # warm: the first live file does not wait for it
            self.indexer.register_locations()
            self.watcher = Watcher(
                self.indexer.locations,
                self.indexer.parser,
                self.queue,
                settle_s=cfg.watch.settle_seconds,
                poll_interval_s=cfg.watch.poll_interval_seconds,
                mounts_file=hooks.mounts_file,
                drop=hooks.watch_drop,
            )
            self.mirror = JsonlMirror(cfg.events_jsonl) if cfg.events_jsonl else None
            self.mounts = self._watch_mounts() if watch_mounts else None
            self.dispatcher = (
                Dispatcher(cfg, hooks.executor, clock=self.clock, on_event=self._on_convert_event)
                if convert
                else None
            )
            undo.pop_all()

    def _take_state_dir(self, what: str) -> None:
        cfg = self.cfg
        if not cfg.storage_locations:
            raise IngestError(
                "no storage locations configured: add a [[storage_locations]] table "
                "(name, path) to the config file (`dsa110-ingest config --example` shows one)"
            )
        try:
            ensure_dir(cfg.state_dir)
            ensure_dir(state_path(cfg).parent)
        except OSError as e:
            raise IngestError(
                f"cannot create state_dir {cfg.state_dir}: {e.strerror}; make its parent "
                "writable by this user or set `state_dir` elsewhere"
            ) from None
        # one daemon per HDF5 DB: a second one would mirror every event twice
        try:
            self.lock.acquire(what)
        except PermissionError as e:
            raise IngestError(
                f"cannot create the lock file {self.lock.path}: {e.strerror}; make "
                f"{self.lock.path.parent} writable by this user (the daemon's state lives there)"
            ) from None

    def _file_identity(self) -> tuple[int, int] | None:
        """A SQLite file's (device, inode), watched by the health check; None: a server
        database, whose own connection errors say when it is gone."""
        if state_path(self.cfg) != self.cfg.hdf5_db:
            return None
        st = os.stat(self.cfg.hdf5_db)
        return (st.st_dev, st.st_ino)

    def _restore_id_floor(self) -> EventIdFloor:
        floor = EventIdFloor(state_path(self.cfg))
        if self.db.raise_event_id_floor(floor.value):
            log.warning(
                "events.id_floor_restored",
                next_id=floor.value + 1,
                hint="the HDF5 DB is newer than the events already handed out (was it "
                "deleted?); event ids continue above the last one ever used",
            )
        floor.write(self.db.event_id_high())
        return floor

    def _watch_mounts(self) -> MountWatch | None:
        try:
            return MountWatch(self.hooks.mountinfo_file)
        except OSError as e:
            log.warning("mounts.unwatched", error=str(e), hint="mounts are seen by reconcile")
            return None

    def _on_convert_event(self, etype: str, gid: str, seconds: float) -> None:
        """Called from the dispatcher's thread."""
        self.metrics.events.labels(etype).inc()
        self.metrics.last_event.set(time.time())
        self.events_dirty = True
        if etype == ev.GROUP_CONVERTED:
            self.metrics.conversion_seconds.observe(seconds)

    def note_event_ids(self) -> None:
        """Raise the on-disk event-id floor to the highest id handed out so far: on the
        floor's own thread (:class:`FloorWriter`), not in the way of the next file."""
        self.floor_writer.raise_to(self.db.event_id_high())

    def _write_floor(self, value: int) -> bool:
        """On the floor writer's thread; False: try again later."""
        try:
            self.floor.write(value)
        except OSError as e:
            if out_of_fds(e):
                self.fds.report(e, where="event id floor")
                return False
            log.error("events.id_floor_unwritable", path=str(self.floor.path), error=str(e))
        return True

    def close(self, limit_s: float = SHUTDOWN_LIMIT_S) -> None:
        """Shut down in stages within ``limit_s``; a forced exit skips every wait."""
        deadline = time.monotonic() + limit_s
        # 1. take no more work: nothing new arrives while the rest winds down
        self.notifier.stopping()
        self.metrics.close()
        if self.mounts:
            self.mounts.close()
        self.watcher.stop()
        # 2. hand running conversions back to the queue (killed, released at once)
        if self.dispatcher:
            self._stop_dispatcher(
                self.dispatcher, min(deadline, time.monotonic() + DISPATCHER_STOP_S)
            )
        # 3. close: never skipped, it is quick and keeps the event ids monotonic
        self.indexer.close()
        if self.mirror:
            self.mirror.sync(self.db)
        self.note_event_ids()
        self.floor_writer.close()  # the last value is on disk before the lock goes
        self.db.close()
        log.info("service.stopped")
        self.lock.release()

    def _stop_dispatcher(self, d: Dispatcher, deadline: float) -> None:
        d.stop(timeout=0)
        # joined in slices: a second signal ends the wait at once
        while d.alive() and not self.flags.force_exit and time.monotonic() < deadline:
            d.stop(timeout=0.1)
        if d.alive():
            log.warning(
                "service.shutdown_incomplete",
                stage="conversions",
                hint="running conversions were not handed back in time; their leases "
                "expire and the groups are retried",
            )
