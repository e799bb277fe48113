"""The ingest service: the live run loop and the one-shot ``--rescan`` burst.

Threads: watchdog observers (emit :class:`FileEvent` on a queue), this main thread (the
only writer of file rows: indexes, reconciles, expires groups, pings systemd) and the
conversion dispatcher (claims jobs, runs converters in child processes). Signals only
set flags; the loop notices within 0.2 s and shuts down in stages.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest import logs
from dsa110_ingest.config import Config
from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.convert.executor import Executor
from dsa110_ingest.db import IndexStore, index_exists, open_index, open_products
from dsa110_ingest.errors import DatabaseError, IngestError
from dsa110_ingest.events import JsonlMirror
from dsa110_ingest.ingest.indexer import BatchResult, Indexer
from dsa110_ingest.ingest.watcher import DELETED, MOVED, FileEvent, Watcher
from dsa110_ingest.metrics import Metrics, package_version
from dsa110_ingest.nodes import STALE_AFTER_S, acquire_node, check_locations, node_state, state_path
from dsa110_ingest.runtime import EventIdFloor, MountWatch, StateLock, affects, ensure_dir
from dsa110_ingest.sdnotify import Notifier

log = structlog.get_logger("dsa110_ingest.service")

EXIT_OK = 0
EXIT_FATAL = 1

_FD_ERRNOS = (errno.EMFILE, errno.ENFILE)
PROGRESS_EVERY_S = 5.0
# a start-up reconcile asks systemd for this much more time at each progress report
EXTEND_START_S = 60.0


def _out_of_fds(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _FD_ERRNOS


@dataclass
class _Deferred:
    first: float
    next_at: float
    delay: float = 0.5
    seen_at: float = 0.0


@dataclass
class ServiceHooks:
    """Test seams: fault injection and fake time, never used in production."""

    watch_drop: Callable[[FileEvent], bool] | None = None
    mounts_file: str = "/proc/self/mounts"
    mountinfo_file: str = "/proc/self/mountinfo"
    executor: Executor | None = None
    clock: Callable[[], float] = time.time


@dataclass
class _Counters:
    indexed: int = 0
    rejected: int = 0
    events: dict[str, int] = field(default_factory=dict)


class Service:
    def __init__(
        self,
        cfg: Config,
        *,
        convert: bool = True,
        notifier: Notifier | None = None,
        hooks: ServiceHooks | None = None,
    ) -> None:
        self.cfg = cfg
        self.convert = convert and cfg.convert.enabled
        self.notifier = notifier or Notifier(None)
        self.hooks = hooks or ServiceHooks()
        self.clock = self.hooks.clock
        self.metrics = Metrics()
        self.should_exit = False
        self._reopen_logs = False
        self.counters = _Counters()
        self.started_at = self.clock()
        self.db: IndexStore | None = None
        self.indexer: Indexer | None = None
        self.watcher: Watcher | None = None
        self.dispatcher: Dispatcher | None = None
        self.mirror = JsonlMirror(cfg.events_jsonl) if cfg.events_jsonl else None
        self.queue: queue.Queue[FileEvent] = queue.Queue()
        self._deferred: dict[str, _Deferred] = {}
        self.lock = StateLock(state_path(cfg))
        self.floor: EventIdFloor | None = None
        self.mounts: MountWatch | None = None
        self._db_ident: tuple[int, int] | None = None
        self._events_dirty = False
        self._ready = False
        self._last_tick = time.monotonic()
        self._stall_s = 30.0
        self._health: tuple[bool, str] = (False, "starting: start-up reconcile running")
        self._last_fd_log = 0.0
        self._transient_seen = 0

    # -- signals ------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reopen_logs = True
            return
        if self.should_exit:
            # a second SIGINT/SIGTERM: the operator means it
            raise SystemExit(EXIT_FATAL)
        self.should_exit = True

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner stops us by setting should_exit
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)

    # -- start-up -----------------------------------------------------------------
    def _open(self, what: str = "run") -> None:
        if not self.cfg.storage_locations:
            raise IngestError(
                "no storage locations configured: add a [[storage_locations]] table "
                "(name, path) to the config file (`dsa110-ingest config --example` shows one)"
            )
        try:
            ensure_dir(self.cfg.state_dir)
            ensure_dir(state_path(self.cfg).parent)
        except OSError as e:
            raise IngestError(
                f"cannot create state_dir {self.cfg.state_dir}: {e.strerror}; make its parent "
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
        self.db = open_index(self.cfg)
        # one daemon per node name on a shared index; only this node's locations
        acquire_node(self.db, self.cfg)
        check_locations(self.db, self.cfg)
        if state_path(self.cfg) == self.cfg.hdf5_db:  # a SQLite file: watch its identity
            st = os.stat(self.cfg.hdf5_db)
            self._db_ident = (st.st_dev, st.st_ino)
        self.floor = EventIdFloor(state_path(self.cfg))
        if self.db.raise_event_id_floor(self.floor.value):
            log.warning(
                "events.id_floor_restored",
                next_id=self.floor.value + 1,
                hint="the HDF5 DB is newer than the events already handed out (was it "
                "deleted?); event ids continue above the last one ever used",
            )
        self.floor.write(self.db.event_id_high())
        open_products(self.cfg).close()  # fail now, not at the first conversion
        self.indexer = Indexer(self.db, self.cfg, clock=self.clock)
        self.indexer.convert_enabled = self.cfg.convert.enabled
        self.indexer.reader.on_wait = self.notifier.watchdog  # hung reads: still alive
        self.indexer.reader.start()  # warm: the first live file does not wait for it
        self.indexer.register_locations()

    def _start_dispatcher(self) -> None:
        if self.convert:
            self.dispatcher = Dispatcher(
                self.cfg, self.hooks.executor, clock=self.clock, on_event=self._on_convert_event
            )
            self.dispatcher.start()

    def _on_convert_event(self, etype: str, gid: str, seconds: float) -> None:
        self.metrics.events.labels(etype).inc()
        self.metrics.last_event.set(time.time())
        self._events_dirty = True  # the id floor is written by the main thread
        if etype == ev.GROUP_CONVERTED:
            self.metrics.conversion_seconds.observe(seconds)

    # -- the live service -----------------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers()
        try:
            self._open()
            assert self.db is not None and self.indexer is not None
            if self.mirror:
                self.mirror.sync(self.db)  # events committed just before a crash
            last_file, last_event = self.db.last_activity()
            self.metrics.last_file_indexed.set(last_file)
            self.metrics.last_event.set(last_event)
            if self.cfg.metrics_listen:
                self.metrics.serve(self.cfg.metrics_listen, health=self.health)
            try:
                self.mounts = MountWatch(self.hooks.mountinfo_file)
            except OSError as e:
                log.warning("mounts.unwatched", error=str(e), hint="mounts are seen by reconcile")
            self.watcher = Watcher(
                self.indexer.locations,
                self.indexer.parser,
                self.queue,
                settle_s=self.cfg.watch.settle_seconds,
                poll_interval_s=self.cfg.watch.poll_interval_seconds,
                mounts_file=self.hooks.mounts_file,
                drop=self.hooks.watch_drop,
            )
            # watches first, then the reconcile: a file written during start-up is seen by
            # one or the other (or both: indexing is idempotent), never by neither
            self.watcher.start()
            self._reconcile("start-up", progress=self._progress_reporter(startup=True))
            gc.freeze()  # start-up's objects leave the collector: no full-GC stalls of files
            self._start_dispatcher()
            self.notifier.ready(self._status_line())
            self._ready = True
            self._health = (True, "ok")
            log.info(
                "service.ready",
                version=package_version(),
                locations={n: m for n, m in self.watcher.modes.items()},
                hdf5_db=str(self.cfg.hdf5_db),
                products_db=str(self.cfg.products_db),
                convert=self.convert,
                watchdog_s=self.notifier.watchdog_interval,
            )
            return self._loop()
        except IngestError as e:
            _error_line(e, "service.fatal")
            return EXIT_FATAL
        except Exception:
            # a bug: say so in the structured log, exit non-zero so systemd restarts us;
            # the start-up reconcile then picks up whatever this run did not finish
            log.exception("service.crashed", hint="please report this traceback")
            return EXIT_FATAL
        finally:
            self._shutdown()

    def _loop(self) -> int:
        assert self.db and self.indexer and self.watcher
        wd = self.notifier.watchdog_interval
        beat_every = min(5.0, wd) if wd else 5.0
        self._stall_s = max(30.0, 6 * beat_every)
        self._loop_state = _LoopState(last_reconcile=time.monotonic())
        while not self.should_exit:
            self._last_tick = time.monotonic()
            try:
                if not self._tick(beat_every):
                    return EXIT_FATAL
            except OSError as e:
                if not _out_of_fds(e):
                    raise
                # EMFILE/ENFILE is a condition of the node, not a bug: log, wait, go on
                self._fd_exhausted(e, "main loop")
                time.sleep(1.0)
        return EXIT_OK

    def _tick(self, beat_every: float) -> bool:
        """One turn of the main loop; False: exit non-zero (systemd restarts us)."""
        assert self.db and self.indexer and self.watcher
        w = self.cfg.watch
        ls = self._loop_state
        # wake for the next settled file, not only at the 0.2 s tick
        due_in = self.watcher.settler.next_due_in()
        self._drain(0.2 if due_in is None else min(0.2, max(0.005, due_in)))
        now_m = time.monotonic()
        due = self.watcher.settler.due()
        if due:
            self._index([FileEvent("ready", p, time.time()) for p in due])
        self._retry_deferred()
        if now_m - ls.last_locations >= 1.0:
            self._check_mounts()
            self.watcher.check_locations()
            ls.last_locations = now_m
        reasons = self.watcher.take_reconcile_request()
        if reasons or now_m - ls.last_reconcile >= w.rescan_interval_seconds:
            done = self._reconcile(", ".join(reasons) or "periodic")
            ls.last_reconcile = time.monotonic()
            if done is None:  # failed (DB busy, out of descriptors): again soon
                ls.last_reconcile -= max(0.0, w.rescan_interval_seconds - 10.0)
        if self._events_dirty:
            self._events_dirty = False
            self._note_event_ids()
        if now_m - ls.last_expire >= w.incomplete_check_seconds:
            self._publish(self._guard(lambda: BatchResult(events=self.indexer.expire_groups())))  # type: ignore[union-attr]
            ls.last_expire = now_m
        if self._reopen_logs:
            self._reopen_logs = False
            logs.reopen()
            log.info("service.logs_reopened")
        if now_m - ls.last_beat >= beat_every:
            ls.last_beat = now_m
            if not self._health_and_ping():
                return False
        return True

    def _health_and_ping(self) -> bool:
        """Heartbeat row + WATCHDOG=1, only while the watchers run and the DB takes writes."""
        assert self.db and self.watcher
        lost = self._db_lost()
        if lost:
            self._health = (False, f"HDF5 DB {lost}")
            log.error(
                "service.db_lost",
                path=str(self.cfg.hdf5_db),
                problem=lost,
                last_event_id=self.floor.value if self.floor else None,
                action="exiting so that it is restarted on a DB at that path; event ids "
                "continue above the last one handed out",
            )
            return False
        alive = self.watcher.alive()
        self.metrics.watcher_alive.set(1 if alive else 0)
        conv_ok = self.dispatcher is None or self.dispatcher.alive()
        db_ok = True
        now = self.clock()
        try:
            self.db.write_heartbeat(
                self.cfg.node, os.getpid(), socket.gethostname(), self.started_at, now,
                self._status(),
            )  # fmt: skip
            self.metrics.heartbeat.set(now)
        except DatabaseError as e:
            db_ok = False
            log.error("service.db_unwritable", error=str(e))
        self._note_event_ids()
        self._refresh_gauges()
        problems = [
            what
            for what, ok in (
                ("a watcher thread died", alive),
                ("the HDF5 DB takes no writes", db_ok),
                ("the conversion dispatcher died", conv_ok),
            )
            if not ok
        ]
        self._health = (not problems, "; ".join(problems) or "ok")
        if alive and db_ok and conv_ok:
            self.notifier.watchdog()
            self.notifier.status(self._status_line())
            return True
        threads_dead = not (alive and conv_ok)
        log.error(
            "service.unhealthy",
            watcher_alive=alive,
            db_writable=db_ok,
            dispatcher_alive=conv_ok,
            action="no watchdog ping: systemd restarts the service if this lasts"
            if self.notifier.watchdog_usec
            else "exiting so that it is restarted"
            if threads_dead
            else "waiting for the database; work is kept and retried",
        )
        # a dead thread never comes back, and without a systemd watchdog nobody would notice
        # the hang: exit. A busy or read-only DB may recover: keep running (and keep work).
        return bool(self.notifier.watchdog_usec) or not threads_dead

    def health(self) -> tuple[bool, str]:
        """For /healthz (called from the metrics server's threads): the main loop turns,
        and at the last heartbeat the watchers, the dispatcher and the DB were fine."""
        if self._ready:
            stalled = time.monotonic() - self._last_tick
            if stalled > self._stall_s and not self.should_exit:
                return False, f"main loop stalled for {stalled:.0f} s"
        if self.should_exit:
            return False, "stopping"
        return self._health

    def _db_lost(self) -> str | None:
        """The DB file at the configured path is gone or another one: we would write into
        an unlinked file that nobody else sees."""
        if self._db_ident is None:
            return None  # a server database: its own connection errors say it
        try:
            st = os.stat(self.cfg.hdf5_db)
        except FileNotFoundError:
            return "was deleted"
        except OSError:
            return None  # unreadable for a moment (NFS hiccup): the DB write check covers it
        if self._db_ident is not None and (st.st_dev, st.st_ino) != self._db_ident:
            return "was replaced by another file"
        return None

    def _note_event_ids(self) -> None:
        if self.floor is None or self.db is None:
            return
        try:
            self.floor.write(self.db.event_id_high())
        except OSError as e:
            if _out_of_fds(e):
                self._fd_exhausted(e, "event id floor")
                self._events_dirty = True
            else:
                log.error("events.id_floor_unwritable", path=str(self.floor.path), error=str(e))

    def _fd_exhausted(self, e: OSError, where: str) -> None:
        self.metrics.fd_exhausted.inc()
        now = time.monotonic()
        if now - self._last_fd_log >= 10.0:
            self._last_fd_log = now
            log.error(
                "service.too_many_open_files",
                where=where,
                error=e.strerror,
                hint="work is kept and retried; raise LimitNOFILE= (ulimit -n) if this recurs",
            )

    def _check_mounts(self) -> None:
        """A filesystem mounted over (or away from under) a location: the old watch sees
        the covered folder, not the new one. Re-arm it and reconcile at once."""
        if self.mounts is None or self.watcher is None:
            return
        changed = self.mounts.changed()
        if not changed:
            return
        for _, loc in self.watcher.locations:
            hits = sorted(m for m in changed if affects(m, loc.path))
            if hits:
                log.warning("location.mount_changed", location=loc.name, mounts=hits)
                self.watcher.rearm(loc.name)
                self.watcher.request_reconcile(f"mount change at {', '.join(hits)}")

    def _progress_reporter(self, startup: bool = False) -> Callable[[int, int], None]:
        """Off a terminal: `reconcile.progress` every few seconds; under systemd, a start-up
        reconcile also asks for more start time so TimeoutStartSec does not kill it."""
        t0 = last = time.monotonic()

        def report(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S and done < total:
                return
            last = now
            self._last_tick = now
            rate = done / max(1e-6, now - t0)
            log.info(
                "reconcile.progress",
                done=done,
                total=total,
                files_per_s=round(rate),
                eta_s=round((total - done) / rate) if rate > 0 else None,
            )
            if startup and not self._ready:
                self.notifier.extend_timeout(EXTEND_START_S)

        return report

    # -- work -----------------------------------------------------------------------
    def _drain(self, timeout: float) -> None:
        items: list[FileEvent] = []
        try:
            items.append(self.queue.get(timeout=timeout))
            while True:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        if items:
            self._index(items)

    def _index(self, items: list[FileEvent]) -> None:
        assert self.indexer
        ready: dict[str, float] = {}
        for it in items:
            if it.kind == DELETED:
                ready.pop(it.path, None)
                self._guard(lambda p=it.path: BatchResult(missing=self.indexer.mark_missing([p])))  # type: ignore[union-attr,misc]
            else:
                ready[it.path] = max(ready.get(it.path, 0.0), it.seen_at)
                if it.kind == MOVED and it.src_path:
                    self._deferred.pop(it.src_path, None)
        if not ready:
            return
        r = self._guard(lambda: self.indexer.index_paths(list(ready)))  # type: ignore[union-attr]
        if r is None:
            # the DB refused the batch (locked past every retry): keep the work for later
            for p, seen in ready.items():
                self._deferred.setdefault(
                    p, _Deferred(time.monotonic(), time.monotonic() + 1, seen_at=seen)
                )
            return
        now = time.time()
        for p in ready:
            if p not in r.deferred:
                self._deferred.pop(p, None)
        for p in r.deferred:
            d = self._deferred.get(p)
            if d is None:
                self._deferred[p] = _Deferred(
                    time.monotonic(), time.monotonic() + 0.5, seen_at=ready.get(p, now)
                )
        if r.indexed + r.updated + r.moved:
            for seen in ready.values():
                self.metrics.index_latency.observe(max(0.0, now - seen))
        for etype, gid in r.events:
            if etype == ev.GROUP_COMPLETE and gid in r.completed_by:
                seen = ready.get(r.completed_by[gid])
                if seen:
                    self.metrics.event_latency.observe(max(0.0, now - seen))
        self._publish(r)

    def _retry_deferred(self) -> None:
        if not self._deferred:
            return
        now = time.monotonic()
        due = [p for p, d in self._deferred.items() if d.next_at <= now]
        if not due:
            return
        limit = self.cfg.watch.locked_retry_max_seconds
        for p in due:
            d = self._deferred[p]
            d.delay = min(d.delay * 2, 30.0)
            d.next_at = now + d.delay
            if now - d.first > limit:
                log.error(
                    "file.still_locked",
                    path=p,
                    seconds=round(now - d.first),
                    hint="a writer has held it open too long; it is retried by the next reconcile",
                )
                del self._deferred[p]
        self._index(
            [FileEvent("ready", p, self._deferred[p].seen_at) for p in due if p in self._deferred]
        )

    def _reconcile(
        self, reason: str, progress: Callable[[int, int], None] | None = None
    ) -> BatchResult | None:
        assert self.indexer
        t0 = time.monotonic()
        r = self._guard(
            lambda: self.indexer.reconcile(  # type: ignore[union-attr]
                on_progress=progress or self._progress_reporter()
            )
        )
        if r is None:
            return None
        self.metrics.reconcile_runs.inc()
        found = r.indexed + r.moved
        if found and reason != "start-up":
            self.metrics.reconcile_found.inc(found)
        log.info(
            "reconcile.done",
            reason=reason,
            found=found,
            unchanged=r.unchanged,
            rejected=r.rejected,
            missing=r.missing,
            seconds=round(time.monotonic() - t0, 3),
        )
        if found and reason == "periodic":
            log.warning(
                "reconcile.found_missed_files",
                count=found,
                hint='the watcher missed these; on NFS/FUSE use watch = "poll"',
            )
        for p in r.deferred:
            self._deferred.setdefault(p, _Deferred(time.monotonic(), time.monotonic() + 0.5))
        self._publish(r)
        return r

    def _guard(self, fn: Callable[[], BatchResult]) -> BatchResult | None:
        """Run one unit of DB work; a DB that stays busy or read-only is logged with the fix
        and the work is retried later, instead of killing the daemon."""
        try:
            return fn()
        except DatabaseError as e:
            log.error("service.db_error", error=str(e), hint="work is kept and retried")
            return None
        except OSError as e:
            if not _out_of_fds(e):
                raise
            self._fd_exhausted(e, "indexing")
            return None

    def _publish(self, r: BatchResult | None) -> None:
        if r is None:
            return
        c = self.counters
        c.indexed += r.indexed
        c.rejected += r.rejected
        self.metrics.files_indexed.inc(r.indexed)
        self.metrics.files_rejected.inc(r.rejected)
        if r.indexed + r.updated + r.moved:
            self.metrics.last_file_indexed.set(time.time())
        for etype, _gid in r.events:
            c.events[etype] = c.events.get(etype, 0) + 1
            self.metrics.events.labels(etype).inc()
        if r.events:
            self.metrics.last_event.set(time.time())
            self._note_event_ids()
            if self.dispatcher:
                self.dispatcher.wake.set()
            if self.mirror and self.db:
                self.mirror.sync(self.db)

    def _status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "files_indexed": c.indexed,
            "files_rejected": c.rejected,
            "events": c.events,
            "queue": self.queue.qsize(),
            "deferred": len(self._deferred),
            "converting": len(self.dispatcher.running) if self.dispatcher else 0,
            "executor": self.dispatcher.describe() if self.dispatcher else None,
            "watch_modes": self.watcher.modes if self.watcher else {},
        }

    def _status_line(self) -> str:
        c = self.counters
        return (
            f"{c.indexed} files indexed, {c.events.get(ev.GROUP_COMPLETE, 0)} groups "
            f"complete, {c.rejected} rejected since start"
        )

    def _refresh_gauges(self) -> None:
        if self.db is None:
            return
        try:
            groups, jobs = self.db.state_counts()
        except DatabaseError:
            return
        self.metrics.set_states(groups, jobs)
        if self.dispatcher:
            self._executor_gauges(self.dispatcher.describe())

    def _executor_gauges(self, d: dict[str, Any]) -> None:
        m = self.metrics
        m.executor_workers.labels(d["executor"]).set(d.get("workers", self.cfg.convert.workers))
        m.conversions_running.set(len(d["running"]))
        m.conversions_waiting.set(1 if d["waiting"] else 0)
        if d["transient_failures"] > self._transient_seen:
            m.conversion_transient_failures.inc(d["transient_failures"] - self._transient_seen)
            self._transient_seen = d["transient_failures"]

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self.metrics.close()
        if self.mounts:
            self.mounts.close()
        if self.watcher:
            self.watcher.stop()
        if self.dispatcher:
            self.dispatcher.stop()
        if self.indexer:
            self.indexer.close()
        if self.db:
            if self.mirror:
                self.mirror.sync(self.db)
            self._note_event_ids()
            self.db.close()
            log.info("service.stopped")
        self.lock.release()

    # -- burst mode -----------------------------------------------------------------
    def rescan(self, progress: bool = False) -> int:
        """One pass over every location with the live path's indexer, conversions drained.

        It takes the daemon's lock: beside a running daemon it refuses (one line naming
        the daemon's pid) rather than race it; see docs/operations.md."""
        self.install_signal_handlers()
        t0 = time.monotonic()
        try:
            self._open("run --rescan")
            assert self.db and self.indexer
            if progress:
                with logs.ProgressBar("files") as bar:
                    r = self.indexer.reconcile(on_progress=bar, obs_expiry=True)
            else:
                r = self.indexer.reconcile(on_progress=self._progress_reporter(), obs_expiry=True)
            self._publish(r)
            dt = time.monotonic() - t0
            rate = r.seen / dt if dt > 0 else 0.0
            completes = sum(1 for e in r.events if e[0] == ev.GROUP_COMPLETE)
            incompletes = sum(1 for e in r.events if e[0] == ev.GROUP_INCOMPLETE)
            if logs.human():
                print(
                    f"rescan: {r.seen} files seen ({r.indexed} indexed, {r.updated} updated, "
                    f"{r.moved} moved, {r.unchanged} unchanged, {r.rejected} rejected, "
                    f"{r.missing} missing, {len(r.deferred)} busy) in {dt:.2f} s "
                    f"({rate:.0f} files/s); {completes} groups completed, {incompletes} "
                    f"incomplete",
                    file=sys.stderr,
                )
                for path, msg in r.rejections[:20]:
                    print(f"  rejected {path}: {msg}", file=sys.stderr)
                if len(r.rejections) > 20:
                    print(
                        f"  ... {len(r.rejections) - 20} more: `dsa110-ingest status`",
                        file=sys.stderr,
                    )
            else:
                # off a terminal every stderr line is a JSON object (rejections are
                # already logged one by one as file.rejected)
                log.info(
                    "rescan.summary",
                    seen=r.seen,
                    indexed=r.indexed,
                    updated=r.updated,
                    moved=r.moved,
                    unchanged=r.unchanged,
                    rejected=r.rejected,
                    missing=r.missing,
                    busy=len(r.deferred),
                    seconds=round(dt, 3),
                    files_per_s=round(rate),
                    groups_completed=completes,
                    groups_incomplete=incompletes,
                )
            conversions_ok = self._drain_conversions(progress) if self.convert else True
            for loc in r.missing_locations:
                _error_line(
                    f"storage location {loc} does not exist; mount or create it, or remove "
                    "it from the config",
                    "rescan.location_missing",
                )
            return EXIT_FATAL if r.missing_locations or not conversions_ok else EXIT_OK
        except IngestError as e:
            _error_line(e, "rescan.fatal")
            return EXIT_FATAL
        finally:
            self._shutdown()

    def _drain_conversions(self, progress: bool = False) -> bool:
        """False when a group failed in this pass or waits on a node condition."""
        assert self.db
        open_jobs = self.db.jobs_open()
        if not open_jobs:
            return True
        if logs.human():
            print(f"rescan: converting {open_jobs} group(s)", file=sys.stderr)
        else:
            log.info("rescan.converting", groups=open_jobs)
        self._start_dispatcher()
        assert self.dispatcher
        d = self.dispatcher
        waiting: str | None = None
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(logs.ProgressBar("groups converted")) if progress else None
            while not self.should_exit and d.alive():
                left = self.db.jobs_open()
                if bar is not None:
                    bar(open_jobs - min(left, open_jobs), open_jobs)
                # a group waiting on the node (disk full) is not retried within one pass
                if left <= len(d.waiting_on_node):
                    break
                if d.waiting != waiting:
                    waiting = d.waiting
                    if waiting and logs.human():  # e.g. the Dask scheduler is down: say why
                        print(f"rescan: conversions waiting: {waiting}", file=sys.stderr)
                    elif waiting:
                        log.warning("rescan.conversions_waiting", reason=waiting)
                time.sleep(0.2)
        st = self.db.counts().conversions
        if logs.human():
            print(
                "rescan: conversions " + ", ".join(f"{n} {s}" for s, n in sorted(st.items())),
                file=sys.stderr,
            )
        else:
            log.info("rescan.conversions", **{s: n for s, n in sorted(st.items())})
        for gid in sorted(d.failed | d.waiting_on_node):
            job = self.db.job(gid)
            what = "failed" if gid in d.failed else "waits on this node"
            error = job.last_error if job else ""
            if logs.human():
                print(f"rescan: {gid} {what}: {error}", file=sys.stderr)
            else:
                log.error("rescan.conversion_not_done", group_id=gid, outcome=what, error=error)
        return not (d.failed or d.waiting_on_node)


def daemon_status(cfg: Config, now: float | None = None) -> dict[str, Any]:
    """running / stale / stopped of this node's daemon, for `status` and scripts: its
    lock says whether a daemon process is alive (the lock dies with the process, so no
    pid guessing), the heartbeat's age whether it still works (nodes.node_state)."""
    now = time.time() if now is None else now
    if not index_exists(cfg):
        st = node_state(None, cfg, cfg.node, None, now)
    else:
        with open_index(cfg, readonly=True) as db:
            st = node_state(db, cfg, cfg.node, db.heartbeat(cfg.node), now)
    return {
        "state": st["state"],
        "pid": st["pid"],
        "heartbeat_age_seconds": st["heartbeat_age_seconds"],
        "stale_after_seconds": STALE_AFTER_S,
        "version": package_version(),
    }


@dataclass
class _LoopState:
    last_reconcile: float
    last_beat: float = 0.0
    last_expire: float = 0.0
    last_locations: float = 0.0


def _error_line(e: BaseException | str, event: str) -> None:
    """One line for a person on a terminal, one JSON object off it."""
    if logs.human():
        print(f"dsa110-ingest: error: {e}", file=sys.stderr)
    else:
        log.error(event, error=str(e))
