"""The daemon's health in one place: the heartbeat row, sd_notify (READY, WATCHDOG,
STATUS, EXTEND_TIMEOUT; STOPPING is the shutdown's), the gauges refreshed with each beat,
and the answer of ``/healthz``.

A beat pings the systemd watchdog only while the watchers run, the dispatcher runs and
the DB takes writes. A dead thread never comes back: without a systemd watchdog to
notice, the daemon exits (non-zero, so it is restarted). A busy or read-only DB may
recover: the daemon keeps running and keeps the work.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.errors import DatabaseError
from dsa110_ingest.procs import this_process
from dsa110_ingest.service.loop import EXIT_FATAL, Stop
from dsa110_ingest.service.runtime import Runtime

log = structlog.get_logger("dsa110_ingest.service")

BEAT_MAX_S = 5.0
STALL_MIN_S = 30.0
PROGRESS_EVERY_S = 5.0
# a start-up reconcile asks systemd for this much more time at each progress report
EXTEND_START_S = 60.0


class Health:
    def __init__(self, rt: Runtime, mono: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.mono = mono
        wd = rt.notifier.watchdog_interval
        self.beat_every = min(BEAT_MAX_S, wd) if wd else BEAT_MAX_S
        # /healthz calls the loop stalled after this long without a turn (6 missed beats)
        self.stall_s = max(STALL_MIN_S, 6 * self.beat_every)
        self.ready = False
        # what a daemon not yet ready is doing, for `status` (None once ready)
        self.phase: str | None = "starting"
        self.last_alive = mono()
        self.state: tuple[bool, str] = (False, "starting: start-up reconcile running")
        self._transient_seen = 0
        # the last unit of indexing work failed on the DB (a full disk, a read-only file):
        # the heartbeat's own small write may still pass, so it cannot tell
        self.work_error: str | None = None

    def alive(self) -> None:
        """The main thread is working (a loop turn, a reconcile's progress)."""
        self.last_alive = self.mono()

    def mark_ready(self) -> None:
        self.rt.notifier.ready(self.status_line())
        self.ready = True
        self.phase = None
        self.state = (True, "ok")

    def starting(self, phase: str) -> None:
        """Before ready (the start-up reconcile): the heartbeat row and gauge say the
        daemon is alive and what it does, so `status` does not call it stale."""
        self.phase = f"starting: {phase}"
        self.alive()
        self._write_heartbeat()

    def check(self) -> tuple[bool, str]:
        """For /healthz (called from the metrics server's threads): the main loop turns,
        and at the last beat the watchers, the dispatcher and the DB were fine."""
        stopping = self.rt.flags.should_exit
        if self.ready and not stopping:
            stalled = self.mono() - self.last_alive
            if stalled > self.stall_s:
                return False, f"main loop stalled for {stalled:.0f} s"
        if stopping:
            return False, "stopping"
        return self.state

    def beat(self) -> None:
        """Heartbeat row, gauges and WATCHDOG=1; raises Stop when the daemon must exit."""
        rt = self.rt
        lost = self.db_lost()
        if lost:
            self.state = (False, f"HDF5 DB {lost}")
            log.error(
                "service.db_lost",
                path=str(rt.cfg.hdf5_db),
                problem=lost,
                last_event_id=rt.floor.value,
                action="exiting so that it is restarted on a DB at that path; event ids "
                "continue above the last one handed out",
            )
            raise Stop(EXIT_FATAL)
        watcher_ok = rt.watcher.alive()
        rt.metrics.watcher_alive.set(1 if watcher_ok else 0)
        conv_ok = rt.dispatcher is None or rt.dispatcher.alive()
        db_ok = self._write_heartbeat()
        rt.note_event_ids()
        self.refresh_gauges()
        problems = [
            what
            for what, ok in (
                ("a watcher thread died", watcher_ok),
                ("the HDF5 DB takes no writes", db_ok),
                (f"indexing fails: {self.work_error}", self.work_error is None),
                ("the conversion dispatcher died", conv_ok),
            )
            if not ok
        ]
        # reported (status, /healthz) but no reason to withhold the watchdog: a restart
        # cannot change who owns the output_dir, and indexing goes on; a hung template
        # is killed and replaced by the dispatcher itself
        claimed = rt.dispatcher.claim_problem if rt.dispatcher else None
        hung = rt.dispatcher.template_problem() if rt.dispatcher else None
        reported = problems + [p for p in (claimed, hung) if p]
        self.state = (not reported, "; ".join(reported) or "ok")
        if not problems:
            rt.notifier.watchdog()
            rt.notifier.status(self.status_line())
            return
        threads_dead = not (watcher_ok and conv_ok)
        systemd_watches = bool(rt.notifier.watchdog_usec)
        log.error(
            "service.unhealthy",
            watcher_alive=watcher_ok,
            db_writable=db_ok,
            indexing_error=self.work_error,
            dispatcher_alive=conv_ok,
            action="no watchdog ping: systemd restarts the service if this lasts"
            if systemd_watches
            else "exiting so that it is restarted"
            if threads_dead
            else "waiting for the database; work is kept and retried",
        )
        if threads_dead and not systemd_watches:
            raise Stop(EXIT_FATAL)

    def _write_heartbeat(self) -> bool:
        rt = self.rt
        now = rt.clock()
        try:
            rt.db.write_heartbeat(
                rt.cfg.node, os.getpid(), socket.gethostname(), rt.started_at, now, self.status()
            )
        except DatabaseError as e:
            log.error("service.db_unwritable", error=str(e))
            return False
        rt.metrics.heartbeat.set(now)
        return True

    def db_lost(self) -> str | None:
        """The DB file at the configured path is gone or another one: we would write into
        an unlinked file that nobody else sees."""
        if self.rt.db_ident is None:
            return None  # a server database: its own connection errors say it
        try:
            st = os.stat(self.rt.cfg.hdf5_db)
        except FileNotFoundError:
            return "was deleted"
        except OSError:
            return None  # unreadable for a moment (NFS hiccup): the DB write check covers it
        if (st.st_dev, st.st_ino) != self.rt.db_ident:
            return "was replaced by another file"
        return None

    def refresh_gauges(self) -> None:
        """Group and job states from the DB, the executor's from the dispatcher."""
        rt, m = self.rt, self.rt.metrics
        try:
            groups, jobs = rt.db.state_counts()
        except DatabaseError:
            return
        m.set_states(groups, jobs)
        if rt.dispatcher is None:
            return
        d = rt.dispatcher.describe()
        m.executor_workers.labels(d["executor"]).set(d.get("workers", rt.cfg.convert.workers))
        m.conversions_running.set(len(d["running"]))
        m.conversions_waiting.set(1 if d["waiting"] else 0)
        if d["transient_failures"] > self._transient_seen:
            m.conversion_transient_failures.inc(d["transient_failures"] - self._transient_seen)
            self._transient_seen = d["transient_failures"]

    def status(self) -> dict[str, Any]:
        """The heartbeat row's status (read by `status`)."""
        rt, c = self.rt, self.rt.counters
        return {
            "files_indexed": c.indexed,
            "files_rejected": c.rejected,
            "events": c.events,
            "queue": rt.queue.qsize(),
            "deferred": len(rt.locked),
            "converting": len(rt.dispatcher.running) if rt.dispatcher else 0,
            "executor": rt.dispatcher.describe() if rt.dispatcher else None,
            "watch_modes": rt.watcher.modes,
            # what the last beat found wrong (None: healthy), for `status`
            "problem": None if self.state[0] or not self.ready else self.state[1],
            "phase": self.phase,
            # where this heartbeat's pid means something (nodes._alive_here)
            "process": this_process().fields(),
        }

    def status_line(self) -> str:
        c = self.rt.counters
        return (
            f"{c.indexed} files indexed, {c.events.get(ev.GROUP_COMPLETE, 0)} groups "
            f"complete, {c.rejected} rejected since start"
        )

    def progress_reporter(self, startup: bool = False) -> Callable[[int, int], None]:
        """Off a terminal: `reconcile.progress` every few seconds; under systemd, a start-up
        reconcile also asks for more start time so TimeoutStartSec does not kill it. A
        second signal ends the reconcile here, between two batches."""
        t0 = last = self.mono()

        def report(done: int, total: int) -> None:
            nonlocal last
            self.rt.flags.check_forced()
            now = self.mono()
            if now - last < PROGRESS_EVERY_S and done < total:
                return
            last = now
            self.alive()
            rate = done / max(1e-6, now - t0)
            log.info(
                "reconcile.progress",
                done=done,
                total=total,
                files_per_s=round(rate),
                eta_s=round((total - done) / rate) if rate > 0 else None,
            )
            if startup and not self.ready:
                self.rt.notifier.extend_timeout(EXTEND_START_S)
                self.starting(f"reconciling, {done}/{total} new or changed files indexed")

        return report
