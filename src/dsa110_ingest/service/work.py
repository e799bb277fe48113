"""The main thread's work: index what the watcher reports, reconcile, expire groups, and
count what came of it. The main thread is the only writer of file rows.

Every unit of DB work goes through :meth:`Work.guard`: a DB that stays busy or read-only
is logged with the fix and the work is kept for later, instead of killing the daemon.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.errors import DatabaseError
from dsa110_ingest.ingest.indexer import BatchResult
from dsa110_ingest.ingest.watcher import DELETED, MOVED, FileEvent
from dsa110_ingest.service.deferral import REFUSED_DELAY_S
from dsa110_ingest.service.health import Health
from dsa110_ingest.service.loop import out_of_fds
from dsa110_ingest.service.runtime import Runtime

log = structlog.get_logger("dsa110_ingest.service")

TURN_S = 0.2  # the longest the loop waits for an event before its periodic tasks
REQUEST_RETRY_S = 10.0  # a reconcile that failed (DB busy, out of descriptors) runs again


class Work:
    def __init__(self, rt: Runtime, health: Health) -> None:
        self.rt = rt
        self.health = health

    # -- phases of every turn -----------------------------------------------------
    def take_events(self) -> None:
        """Wait for the watcher's events (not past the next settled file), index them."""
        due_in = self.rt.watcher.settler.next_due_in()
        timeout = TURN_S if due_in is None else min(TURN_S, max(0.005, due_in))
        try:
            first = self.rt.queue.get(timeout=timeout)
        except queue.Empty:
            return
        self.index([first, *self._waiting()])

    def serve_waiting(self) -> None:
        """Index the events already queued, without waiting: the loop calls this before
        each periodic task that is due, so a file never waits behind one."""
        items = self._waiting()
        if items:
            self.index(items)

    def _waiting(self) -> list[FileEvent]:
        items: list[FileEvent] = []
        try:
            while True:
                items.append(self.rt.queue.get_nowait())
        except queue.Empty:
            return items

    def take_settled(self) -> None:
        """Files that gave no finishing signal and held still for ``settle_seconds``."""
        due = self.rt.watcher.settler.due()
        if due:
            self.index([FileEvent("ready", p, time.time()) for p in due])

    def retry_locked(self) -> None:
        due = self.rt.locked.due()
        if due:
            self.index([FileEvent("ready", p, seen) for p, seen in due])

    def note_events(self) -> None:
        """The dispatcher emitted events: raise the id floor and mirror them (both are
        written from this thread)."""
        if self.rt.events_dirty:
            self.rt.events_dirty = False
            self.rt.note_event_ids()
            if self.rt.mirror:
                self.rt.mirror.sync(self.rt.db)

    # -- periodic tasks -----------------------------------------------------------
    def expire_groups(self) -> None:
        self.publish(self.guard(lambda: BatchResult(events=self.rt.indexer.expire_groups())))

    # -- the work itself ----------------------------------------------------------
    def index(self, items: list[FileEvent]) -> None:
        rt = self.rt
        ready: dict[str, float] = {}
        gone: dict[str, None] = {}
        for it in items:
            if it.kind == DELETED:
                ready.pop(it.path, None)
                gone[it.path] = None
            else:
                ready[it.path] = max(ready.get(it.path, 0.0), it.seen_at)
                if it.kind == MOVED and it.src_path:
                    rt.locked.discard(it.src_path)
        if gone:
            # a folder cleared at once is one transaction, not one per file; marked before
            # the batch's ready files, so a name deleted then written again is indexed
            # (mark_missing skips a path that exists again)
            self.publish(self.guard(lambda: rt.indexer.mark_missing(list(gone))))
        if not ready:
            return
        result = self.guard(lambda: rt.indexer.index_paths(list(ready)))
        if result is None:
            # the DB refused the batch (locked past every retry): keep the work for later
            for p, seen in ready.items():
                rt.locked.defer(p, seen, first_delay=REFUSED_DELAY_S)
            return
        now = time.time()
        for p in ready:
            if p not in result.deferred:
                rt.locked.discard(p)
        for p in result.deferred:
            rt.locked.defer(p, ready.get(p, now))
        self._observe_latency(ready, result, now)
        self.publish(result)

    def _observe_latency(self, ready: dict[str, float], result: BatchResult, now: float) -> None:
        m = self.rt.metrics
        if result.indexed + result.updated + result.moved:
            for seen in ready.values():
                m.index_latency.observe(max(0.0, now - seen))
        for etype, gid in result.events:
            if etype == ev.GROUP_COMPLETE and gid in result.completed_by:
                seen = ready.get(result.completed_by[gid])
                if seen:
                    m.event_latency.observe(max(0.0, now - seen))

    def reconcile(
        self, reason: str, progress: Callable[[int, int], None] | None = None
    ) -> BatchResult | None:
        rt = self.rt
        t0 = time.monotonic()
        on_progress = progress or self.health.progress_reporter()
        # a stop (SIGTERM) ends the reconcile at its next batch, not after it (D2)
        result = self.guard(
            lambda: rt.indexer.reconcile(on_progress=on_progress, stop=lambda: rt.flags.should_exit)
        )
        if result is None:
            return None
        rt.metrics.reconcile_runs.inc()
        found = result.indexed + result.moved
        if found and reason != "start-up":
            rt.metrics.reconcile_found.inc(found)
        log.info(
            "reconcile.done",
            reason=reason,
            found=found,
            unchanged=result.unchanged,
            rejected=result.rejected,
            missing=result.missing,
            seconds=round(time.monotonic() - t0, 3),
            **({"stopped": "a stop was asked; the next start resumes"} if result.stopped else {}),
        )
        if found and reason == "periodic":
            log.warning(
                "reconcile.found_missed_files",
                count=found,
                hint='the watcher missed these; on NFS/FUSE use watch = "poll"',
            )
        now = time.time()  # a busy file found now was seen finished no earlier than now
        for p in result.deferred:
            rt.locked.defer(p, now)
        self.publish(result)
        return result

    def guard(self, fn: Callable[[], BatchResult]) -> BatchResult | None:
        """Run one unit of DB work; None: it failed, was logged, and is retried later."""
        try:
            result = fn()
        except DatabaseError as e:
            log.error("service.db_error", error=str(e), hint="work is kept and retried")
            self.health.work_error = str(e)
            return None
        except OSError as e:
            if not out_of_fds(e):
                raise
            self.rt.fds.report(e, where="indexing")
            return None
        self.health.work_error = None
        return result

    def publish(self, result: BatchResult | None) -> None:
        """Count a batch's outcome, wake the dispatcher and mirror its events."""
        if result is None:
            return
        rt, c = self.rt, self.rt.counters
        c.indexed += result.indexed
        c.rejected += result.rejected
        rt.metrics.files_indexed.inc(result.indexed)
        rt.metrics.files_rejected.inc(result.rejected)
        if result.indexed + result.updated + result.moved:
            rt.metrics.last_file_indexed.set(time.time())
        for etype, _gid in result.events:
            c.events[etype] = c.events.get(etype, 0) + 1
            rt.metrics.events.labels(etype).inc()
        if result.events:
            rt.metrics.last_event.set(time.time())
            rt.note_event_ids()
            if rt.dispatcher:
                rt.dispatcher.wake.set()
            if rt.mirror:
                rt.mirror.sync(rt.db)
