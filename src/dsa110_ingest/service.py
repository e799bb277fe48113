"""The ingest service: the live run loop and the one-shot ``--rescan`` burst.

Threads: watchdog observers (emit :class:`FileEvent` on a queue), this main thread (the
only writer of file rows: indexes, reconciles, expires groups, pings systemd) and the
conversion dispatcher (claims jobs, runs converters in child processes). Signals only
set flags; the loop notices within 0.2 s and shuts down in stages.
"""

from __future__ import annotations

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
from dsa110_ingest.convert.executor import Executor
from dsa110_ingest.convert.queue import Dispatcher
from dsa110_ingest.db.hdf5 import Hdf5DB
from dsa110_ingest.db.products import ProductsDB
from dsa110_ingest.errors import DatabaseError, IngestError
from dsa110_ingest.events import JsonlMirror
from dsa110_ingest.ingest.indexer import BatchResult, Indexer
from dsa110_ingest.ingest.watcher import DELETED, MOVED, FileEvent, Watcher
from dsa110_ingest.metrics import Metrics
from dsa110_ingest.sdnotify import Notifier

log = structlog.get_logger("dsa110_ingest.service")

EXIT_OK = 0
EXIT_FATAL = 1


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
        self.db: Hdf5DB | None = None
        self.indexer: Indexer | None = None
        self.watcher: Watcher | None = None
        self.dispatcher: Dispatcher | None = None
        self.mirror = JsonlMirror(cfg.events_jsonl) if cfg.events_jsonl else None
        self.queue: queue.Queue[FileEvent] = queue.Queue()
        self._deferred: dict[str, _Deferred] = {}

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
    def _open(self) -> None:
        if not self.cfg.storage_locations:
            raise IngestError(
                "no storage locations configured: add a [[storage_locations]] table "
                "(name, path) to the config file (see config/ingest.toml)"
            )
        self.db = Hdf5DB(self.cfg.hdf5_db)
        ProductsDB(self.cfg.products_db).close()  # fail now, not at the first conversion
        self.indexer = Indexer(self.db, self.cfg, clock=self.clock)
        self.indexer.convert_enabled = self.cfg.convert.enabled
        self.indexer.register_locations()

    def _start_dispatcher(self) -> None:
        if self.convert:
            self.dispatcher = Dispatcher(
                self.cfg, self.hooks.executor, clock=self.clock, on_event=self._on_convert_event
            )
            self.dispatcher.start()

    def _on_convert_event(self, etype: str, gid: str, seconds: float) -> None:
        self.metrics.events.labels(etype).inc()
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
            if self.cfg.metrics_listen:
                self.metrics.serve(self.cfg.metrics_listen)
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
            self._reconcile("start-up")
            self._start_dispatcher()
            self.notifier.ready(self._status_line())
            log.info(
                "service.ready",
                locations={n: m for n, m in self.watcher.modes.items()},
                hdf5_db=str(self.cfg.hdf5_db),
                products_db=str(self.cfg.products_db),
                convert=self.convert,
                watchdog_s=self.notifier.watchdog_interval,
            )
            return self._loop()
        except IngestError as e:
            log.error("service.fatal", error=str(e))
            print(f"dsa110-ingest: error: {e}", file=sys.stderr)
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
        w = self.cfg.watch
        wd = self.notifier.watchdog_interval
        beat_every = min(5.0, wd) if wd else 5.0
        last_beat = last_expire = last_locations = 0.0
        last_reconcile = time.monotonic()
        while not self.should_exit:
            # wake for the next settled file, not only at the 0.2 s tick
            due_in = self.watcher.settler.next_due_in()
            self._drain(0.2 if due_in is None else min(0.2, max(0.005, due_in)))
            now_m = time.monotonic()
            due = self.watcher.settler.due()
            if due:
                self._index([FileEvent("ready", p, time.time()) for p in due])
            self._retry_deferred()
            if now_m - last_locations >= 1.0:
                self.watcher.check_locations()
                last_locations = now_m
            reasons = self.watcher.take_reconcile_request()
            if reasons or now_m - last_reconcile >= w.rescan_interval_seconds:
                self._reconcile(", ".join(reasons) or "periodic")
                last_reconcile = time.monotonic()
            if now_m - last_expire >= w.incomplete_check_seconds:
                self._publish(self._guard(lambda: BatchResult(events=self.indexer.expire_groups())))  # type: ignore[union-attr]
                last_expire = now_m
            if self._reopen_logs:
                self._reopen_logs = False
                logs.reopen()
                log.info("service.logs_reopened")
            if now_m - last_beat >= beat_every:
                last_beat = now_m
                if not self._health_and_ping():
                    return EXIT_FATAL
        return EXIT_OK

    def _health_and_ping(self) -> bool:
        """Heartbeat row + WATCHDOG=1, only while the watchers run and the DB takes writes."""
        assert self.db and self.watcher
        alive = self.watcher.alive()
        self.metrics.watcher_alive.set(1 if alive else 0)
        conv_ok = self.dispatcher is None or self.dispatcher.alive()
        db_ok = True
        try:
            self.db.write_heartbeat(
                os.getpid(), socket.gethostname(), self.started_at, self.clock(), self._status()
            )
        except DatabaseError as e:
            db_ok = False
            log.error("service.db_unwritable", error=str(e))
        self._refresh_gauges()
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

    def _reconcile(self, reason: str) -> BatchResult | None:
        assert self.indexer
        t0 = time.monotonic()
        r = self._guard(self.indexer.reconcile)
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

    def _publish(self, r: BatchResult | None) -> None:
        if r is None:
            return
        c = self.counters
        c.indexed += r.indexed
        c.rejected += r.rejected
        self.metrics.files_indexed.inc(r.indexed)
        self.metrics.files_rejected.inc(r.rejected)
        for etype, _gid in r.events:
            c.events[etype] = c.events.get(etype, 0) + 1
            self.metrics.events.labels(etype).inc()
        if r.events:
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
        for state, n in groups.items():
            self.metrics.groups.labels(state).set(n)
        for state, n in jobs.items():
            self.metrics.conversions.labels(state).set(n)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.watcher:
            self.watcher.stop()
        if self.dispatcher:
            self.dispatcher.stop()
        if self.indexer:
            self.indexer.close()
        if self.db:
            if self.mirror:
                self.mirror.sync(self.db)
            self.db.close()
        log.info("service.stopped")

    # -- burst mode -----------------------------------------------------------------
    def rescan(self, progress: bool = False) -> int:
        """One pass over every location with the live path's indexer, conversions drained."""
        self.install_signal_handlers()
        t0 = time.monotonic()
        try:
            self._open()
            assert self.db and self.indexer
            bar = _ProgressBar() if progress else None
            r = self.indexer.reconcile(on_progress=bar, obs_expiry=True)
            if bar:
                bar.done()
            self._publish(r)
            dt = time.monotonic() - t0
            rate = r.seen / dt if dt > 0 else 0.0
            completes = sum(1 for e in r.events if e[0] == ev.GROUP_COMPLETE)
            incompletes = sum(1 for e in r.events if e[0] == ev.GROUP_INCOMPLETE)
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
                    f"  ... {len(r.rejections) - 20} more: `dsa110-ingest status`", file=sys.stderr
                )
            conversions_ok = self._drain_conversions() if self.convert else True
            for loc in r.missing_locations:
                print(
                    f"dsa110-ingest: error: storage location {loc} does "
                    "not exist; mount or create it, or remove it from the config",
                    file=sys.stderr,
                )
            return EXIT_FATAL if r.missing_locations or not conversions_ok else EXIT_OK
        except IngestError as e:
            print(f"dsa110-ingest: error: {e}", file=sys.stderr)
            return EXIT_FATAL
        finally:
            self._shutdown()

    def _drain_conversions(self) -> bool:
        """False when a group failed in this pass or waits on a node condition."""
        assert self.db
        open_jobs = self.db.jobs_open()
        if not open_jobs:
            return True
        print(f"rescan: converting {open_jobs} group(s)", file=sys.stderr)
        self._start_dispatcher()
        assert self.dispatcher
        while not self.should_exit and self.dispatcher.alive():
            # a group waiting on the node (disk full) is not retried within one pass
            if self.db.jobs_open() <= len(self.dispatcher.waiting_on_node):
                break
            time.sleep(0.2)
        st = self.db.counts()["conversions"]
        print(
            "rescan: conversions " + ", ".join(f"{n} {s}" for s, n in sorted(st.items())),
            file=sys.stderr,
        )
        d = self.dispatcher
        for gid in sorted(d.failed | d.waiting_on_node):
            job = self.db.job(gid)
            what = "failed" if gid in d.failed else "waits on this node"
            print(f"rescan: {gid} {what}: {job['last_error'] if job else ''}", file=sys.stderr)
        return not (d.failed or d.waiting_on_node)


class _ProgressBar:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        width = 30
        frac = done / total if total else 1.0
        rate = done / max(1e-6, time.monotonic() - self.t0)
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        sys.stderr.write(f"\r[{bar}] {done}/{total} files  {rate:.0f}/s")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
