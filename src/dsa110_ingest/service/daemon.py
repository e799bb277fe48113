"""The ingest service: the live daemon and the one-shot ``--rescan`` burst.

Threads: watchdog observers (emit :class:`FileEvent` on a queue), this main thread (the
only writer of file rows: indexes, reconciles, expires groups, pings systemd), the
conversion dispatcher (claims jobs, runs converters in child processes), and the
event-id floor's writer (its fsync kept off the main thread). Signals only
set flags; the loop notices within one turn (0.2 s) and shuts down in stages.
"""

from __future__ import annotations

import gc
import time

import structlog

from dsa110_ingest import logs
from dsa110_ingest.config import Config
from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.errors import IngestError
from dsa110_ingest.ingest.indexer import Indexer
from dsa110_ingest.ingest.watcher import Watcher
from dsa110_ingest.metrics import Metrics, package_version
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service import burst
from dsa110_ingest.service.health import Health
from dsa110_ingest.service.loop import EXIT_FATAL, EXIT_OK, Every, Loop, Phase
from dsa110_ingest.service.mounts import rearm_changed
from dsa110_ingest.service.report import error_line
from dsa110_ingest.service.runtime import Runtime, ServiceHooks
from dsa110_ingest.service.signals import Flags, ForcedExit
from dsa110_ingest.service.work import REQUEST_RETRY_S, Work

log = structlog.get_logger("dsa110_ingest.service")

LOCATIONS_EVERY_S = 1.0


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
        self.flags = Flags()
        self.metrics = Metrics()
        # the running parts, once built (read by tests and embedding code)
        self.runtime: Runtime | None = None

    @property
    def should_exit(self) -> bool:
        return self.flags.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """Embedded (not the main thread, no signals): the owner stops the service here."""
        self.flags.should_exit = value

    @property
    def watcher(self) -> Watcher | None:
        return self.runtime.watcher if self.runtime else None

    @property
    def indexer(self) -> Indexer | None:
        return self.runtime.indexer if self.runtime else None

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self.runtime.dispatcher if self.runtime else None

    def _build(self, what: str, watch_mounts: bool) -> Runtime:
        self.runtime = Runtime(
            self.cfg,
            convert=self.convert,
            flags=self.flags,
            notifier=self.notifier,
            metrics=self.metrics,
            hooks=self.hooks,
            what=what,
            watch_mounts=watch_mounts,
        )
        return self.runtime

    def _close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
        else:  # the start failed before anything was built
            self.notifier.stopping()
            self.metrics.close()
        self.notifier.close()  # STOPPING=1 was the last word

    # -- the live service -----------------------------------------------------------
    def run(self) -> int:
        self.flags.install()
        try:
            rc = self._live(self._build("run", watch_mounts=True))
        except ForcedExit:
            rc = EXIT_FATAL
        except IngestError as e:
            error_line(e, "service.fatal")
            rc = EXIT_FATAL
        except Exception:
            # a bug: say so in the structured log, exit non-zero so systemd restarts us;
            # the start-up reconcile then picks up whatever this run did not finish
            log.exception("service.crashed", hint="please report this traceback")
            rc = EXIT_FATAL
        finally:
            self._close()
        return EXIT_FATAL if self.flags.force_exit else rc

    def _live(self, rt: Runtime) -> int:
        health = Health(rt)
        work = Work(rt, health)
        if rt.mirror:
            rt.mirror.sync(rt.db)  # events committed just before a crash
        last_file, last_event = rt.db.last_activity()
        rt.metrics.last_file_indexed.set(last_file)
        rt.metrics.last_event.set(last_event)
        if self.cfg.metrics_listen:
            rt.metrics.serve(self.cfg.metrics_listen, health=health.check)
        # watches first, then the reconcile: a file written during start-up is seen by
        # one or the other (or both: indexing is idempotent), never by neither
        rt.watcher.start()
        health.starting("scanning the storage locations")
        work.reconcile("start-up", progress=health.progress_reporter(startup=True))
        if self.flags.should_exit:
            return EXIT_OK  # stopped during start-up: never ready, no conversion started
        gc.freeze()  # start-up's objects leave the collector: no full-GC stalls of files
        if rt.dispatcher:
            rt.dispatcher.start()
        health.mark_ready()
        log.info(
            "service.ready",
            version=package_version(),
            locations=dict(rt.watcher.modes),
            hdf5_db=str(self.cfg.hdf5_db),
            products_db=str(self.cfg.products_db),
            convert=self.convert,
            watchdog_s=self.notifier.watchdog_interval,
        )
        return self._loop(rt, work, health).run()

    def _loop(self, rt: Runtime, work: Work, health: Health) -> Loop:
        w = self.cfg.watch
        asked = _ReconcileRequests(rt.watcher)

        def reconcile() -> bool:
            return work.reconcile(asked.take() or "periodic") is not None

        def locations() -> None:
            if rt.mounts:
                rearm_changed(rt.mounts, rt.watcher)
            rt.watcher.check_locations()

        phases = [
            Phase("events", work.take_events),
            Phase("settled files", work.take_settled),
            Phase("locked files", work.retry_locked),
            Phase("event ids", work.note_events),
            Phase("log reopen", self._reopen_logs),
        ]
        start = time.monotonic()
        tasks = [
            Every(LOCATIONS_EVERY_S, locations, "locations"),
            # the start-up reconcile just ran: the first periodic one is an interval away
            Every(
                w.rescan_interval_seconds,
                reconcile,
                "reconcile",
                retry_s=REQUEST_RETRY_S,
                asked=asked.pending,
                next_at=start + w.rescan_interval_seconds,
            ),
            Every(w.incomplete_check_seconds, work.expire_groups, "expire groups"),
            Every(health.beat_every, health.beat, "heartbeat"),
        ]
        return Loop(
            phases,
            tasks,
            self.flags,
            on_turn=health.alive,
            on_out_of_fds=lambda e, where: rt.fds.report(e, where=where),
            serve=work.serve_waiting,
        )

    def _reopen_logs(self) -> None:
        if self.flags.reopen_logs:
            self.flags.reopen_logs = False
            logs.reopen()
            log.info("service.logs_reopened")

    # -- burst mode -----------------------------------------------------------------
    def rescan(self, progress: bool = False) -> int:
        """One pass over every location, conversions drained (see service/burst.py)."""
        self.flags.install()
        started = time.monotonic()
        try:
            rc = burst.rescan(self._build("run --rescan", watch_mounts=False), progress, started)
        except ForcedExit:
            rc = EXIT_FATAL
        except IngestError as e:
            error_line(e, "rescan.fatal")
            rc = EXIT_FATAL
        finally:
            self._close()
        return EXIT_FATAL if self.flags.force_exit else rc


class _ReconcileRequests:
    """What the watcher asked a reconcile for (overflow, a location back, a mount)."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.reasons: list[str] = []

    def pending(self) -> bool:
        self.reasons += self.watcher.take_reconcile_request()
        return bool(self.reasons)

    def take(self) -> str:
        self.pending()
        reasons, self.reasons = self.reasons, []
        return ", ".join(reasons)
