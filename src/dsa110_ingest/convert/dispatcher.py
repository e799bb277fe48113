"""The conversion dispatcher: claim groups with a lease, run them on an executor, record
the MS in ``ms_index`` and only then mark the group converted.

The order of the two writes is what makes "exactly once" hold across crashes: a crash
after the ``ms_index`` upsert and before ``converted`` leaves a running job whose lease
expires; the retry finds the valid MS, skips the conversion and upserts the same row
(``path`` is the key), so there is never a converted group without its row, nor two rows.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.convert.backends import backend_for
from dsa110_ingest.convert.executor import Executor, Handle, make_executor
from dsa110_ingest.convert.lease_keeper import LeaseKeeper
from dsa110_ingest.convert.ownership import ClaimGuard
from dsa110_ingest.convert.recorder import Recorder
from dsa110_ingest.convert.request import ConversionRequest, build_request
from dsa110_ingest.db import IndexStore, open_index, open_products
from dsa110_ingest.errors import ConversionError, DatabaseError, TransientConversionError
from dsa110_ingest.leases import owner_name

log = structlog.get_logger("dsa110_ingest.convert")

# how often the dispatcher looks for expired leases whose attempts are used up
LAPSED_CHECK_S = 5.0


class Dispatcher:
    """Claims jobs and runs up to ``workers`` conversions at once, in its own thread."""

    def __init__(
        self,
        cfg: Config,
        executor: Executor | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.executor = executor or make_executor(cfg.convert)
        self.clock = clock
        self.on_event = on_event
        self.owner = owner_name("daemon")
        # renews the leases from its own thread: this one blocks (template, Dask, starts)
        self.leases = LeaseKeeper(cfg, self.owner, clock)
        self.running: dict[str, tuple[Handle, ConversionRequest]] = {}
        self.starting: str | None = None  # claimed, being handed to the executor
        self._warned: set[str] = set()  # running conversions already reported as slow
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: set[str] = set()  # groups this dispatcher saw fail for good
        self.waiting_on_node: set[str] = set()  # pending because of a node condition
        self.waiting: str | None = None  # why conversions cannot start now
        # the output_dir belongs to another index (or its claim is unusable): why
        self.claim_problem: str | None = None
        self.claim: ClaimGuard | None = None
        self.transient_failures = 0
        self._lapsed_checked = -LAPSED_CHECK_S

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="convert-dispatcher", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        hdf5 = open_index(self.cfg)
        products = open_products(self.cfg)
        rec = Recorder(self.cfg, hdf5, products, self.clock)
        self.leases.start()
        try:
            self.claim = ClaimGuard(self.cfg, hdf5.index_id() or "")
            while not self._stop.is_set():
                self._reap(hdf5, rec)
                for gid in self.leases.take_lost():
                    if gid in self.running:
                        self._give_up(gid, "lease lost (expired, re-claimed elsewhere)")
                self._fail_lapsed(hdf5, rec)
                limit = self._limit()
                while len(self.running) < limit and not self._stop.is_set():
                    if not self._claim_one(hdf5, rec):
                        break
                    self.leases.tick()  # each claim may have waited on the executor
                self.wake.wait(0.2 if self.running else 1.0)
                self.wake.clear()
        except BaseException:
            # the health check sees the thread gone (alive()); the log says why
            log.exception("convert.dispatcher_died")
        finally:
            self.leases.stop()
            self._abandon(hdf5)
            self.executor.close()
            hdf5.close()
            products.close()

    def _limit(self) -> int:
        """How many conversions may run now; records and logs why none can start."""
        limit = self.cfg.convert.workers
        # before any conversion: another index's output_dir is never written (ownership.py)
        self.claim_problem = self.claim.check() if self.claim else None
        if self.claim_problem:
            return 0
        reason = self.executor.unavailable()
        if reason != self.waiting:
            if reason:
                log.warning(
                    "convert.waiting",
                    executor=self.executor.name,
                    reason=reason,
                    hint="ingest goes on; conversions start when the executor is back",
                )
            else:
                log.info("convert.executor_ready", executor=self.executor.name)
            self.waiting = reason
        if reason:
            return 0
        cap = self.executor.capacity()
        return limit if cap is None else min(limit, cap)

    def _fail_lapsed(self, hdf5: IndexStore, rec: Recorder) -> None:
        """Fail the groups whose every attempt lost its lease (claim_job passes them over):
        a conversion that kills its daemon each time is not retried for ever."""
        mono = time.monotonic()
        if mono - self._lapsed_checked < LAPSED_CHECK_S:
            return
        self._lapsed_checked = mono
        for job in hdf5.lapsed_jobs(self.clock(), self.cfg.convert.max_attempts):
            if job.group_id in self.running and job.lease_owner == self.owner:
                continue  # ours and running: its renewal was late, the keeper renews it
            if rec.lapsed(job):
                self._note(job.group_id, "failed")
                if self.on_event:
                    self.on_event(ev.GROUP_FAILED, job.group_id, 0.0)

    def _give_up(self, gid: str, why: str) -> None:
        """Stop an attempt whose lease is gone: its result, if any, is never recorded."""
        h, _req = self.running.pop(gid)
        self.leases.drop(gid)
        h.kill()
        self.executor.forget(h)
        self._warned.discard(gid)
        log.warning("convert.lease_lost", group_id=gid, reason=why)

    def template_problem(self) -> str | None:
        """The local executor's conversion template not answering (None: it answers, or
        there is none): the dispatcher's thread waits on it until it is killed."""
        template = getattr(self.executor, "template", None)
        return template.problem() if template is not None else None

    def describe(self) -> dict[str, Any]:
        """The executor and what runs on it, for `status` and the metrics."""
        return {
            **self.executor.describe(),
            "running": sorted(self.running),
            "starting": [g for g in [self.starting] if g],
            "waiting": self.waiting,
            "output_dir_problem": self.claim_problem,
            "transient_failures": self.transient_failures,
        }

    def _claim_one(self, hdf5: IndexStore, rec: Recorder) -> bool:
        c = self.cfg.convert
        job = hdf5.claim_job(
            self.owner, self.clock(), c.lease_seconds, c.order == "newest_first", c.max_attempts
        )
        if job is None:
            return False
        gid = job.group_id
        if gid in self.running:  # our own attempt, whose lease lapsed: never two of one group
            self._give_up(gid, "lease lapsed (not renewed in time) and claimed again")
        self.leases.hold(gid)  # from now: building the request and submitting may block
        try:
            req = build_request(self.cfg, hdf5, gid, partial=bool(job.partial))
        except ConversionError as e:
            self.leases.drop(gid)
            self._note(gid, rec.failure(gid, self.owner, e))
            return True
        req = dataclasses.replace(req, token=job.attempt_token or "")
        log.info(
            "convert.started",
            group_id=gid,
            attempt=job.attempts,
            output=req.output,
            files=len(req.inputs),
        )
        self.starting = gid  # a submit may wait (the template, Dask): `status` says so
        try:
            handle = self.executor.submit(req)
        except OSError as e:
            self.leases.drop(gid)
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # out of descriptors is the node's condition, not the group's: hand it back
                log.error("convert.too_many_open_files", group_id=gid, error=e.strerror)
                hdf5.release_job(gid, self.owner, self.clock())
                self._stop.wait(1.0)
                return False
            # the executor is out of reach (the scheduler went away since the check)
            self.transient_failures += 1
            rec.transient(req, self.owner, f"could not submit to {self.executor.name}: {e}")
            return False
        finally:
            self.starting = None
        self.running[gid] = (handle, req)
        return True

    def _reap(self, hdf5: IndexStore, rec: Recorder) -> None:
        c = self.cfg.convert
        for gid, (h, req) in list(self.running.items()):
            elapsed = time.monotonic() - h.started
            if not h.poll():
                if elapsed > c.timeout_seconds:
                    h.kill()
                else:
                    if elapsed > c.warn_after_seconds and gid not in self._warned:
                        log.warning(
                            "convert.slow",
                            group_id=gid,
                            seconds=round(elapsed),
                            hint="conversion is falling behind the ~309 s cadence",
                        )
                        self._warned.add(gid)
                    continue
            del self.running[gid]
            self.leases.drop(gid)
            self._warned.discard(gid)
            result, error = h.result()
            self.executor.forget(h)
            if elapsed > c.timeout_seconds and error:
                error = (
                    f"ran longer than timeout_seconds ({c.timeout_seconds:g} s) and was "
                    "killed; raise [convert] timeout_seconds if that is normal"
                )
            elif h.transient:
                self.transient_failures += 1
                rec.transient(req, self.owner, error or "lost by the executor")
                continue
            if result is not None and self.executor.remote:
                error = self._check_here(req, result)
                if error:
                    result = None
            if result is not None:
                try:
                    self.waiting_on_node.discard(gid)
                    if rec.success(req, result, self.owner) and self.on_event:
                        self.on_event(ev.GROUP_CONVERTED, gid, elapsed)
                except DatabaseError as e:
                    outcome = rec.failure(
                        gid,
                        self.owner,
                        TransientConversionError(f"MS written but recording it failed: {e}"),
                    )
                    self._note(gid, outcome)
            else:
                outcome = rec.failure(gid, self.owner, error or "unknown error")
                self._note(gid, outcome)
                if outcome == "failed" and self.on_event:
                    self.on_event(ev.GROUP_FAILED, gid, elapsed)

    def _note(self, gid: str, outcome: str) -> None:
        """Remember groups that failed, or wait on the node, for ``run --rescan``."""
        if outcome == "failed":
            self.failed.add(gid)
        if outcome == "wait":
            self.waiting_on_node.add(gid)
        else:
            self.waiting_on_node.discard(gid)

    def _check_here(self, req: ConversionRequest, result: dict[str, Any]) -> str | None:
        """A remote worker said it wrote the MS: it must be there, whole, for us too."""
        path = Path(result["ms_path"])
        why = backend_for(req.backend).validate(req, path)
        if why is None:
            return None
        return (
            f"the worker reported {path} written, but from the daemon's host it {why}; "
            "[convert] output_dir must be storage shared by the workers and the daemon "
            "(`dsa110-ingest doctor` probes it)"
        )

    def _abandon(self, hdf5: IndexStore) -> None:
        """On shutdown, stop running conversions and hand their groups back at once."""
        for gid, (h, _req) in list(self.running.items()):
            self.leases.drop(gid)
            h.kill()
            self.executor.forget(h)
            try:
                hdf5.release_job(gid, self.owner, self.clock())
            except DatabaseError:
                log.warning(
                    "convert.release_failed",
                    group_id=gid,
                    hint="the lease expires and the group is retried",
                )
        self.running.clear()
