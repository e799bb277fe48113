"""The conversion queue: claim groups with a lease, run them on an executor, record
the MS in ``ms_index`` and only then mark the group converted.

The order of the two writes is what makes "exactly once" hold across crashes: a crash
after the ``ms_index`` upsert and before ``converted`` leaves a running job whose lease
expires; the retry finds the valid MS, skips the conversion and upserts the same row
(``path`` is the key), so there is never a converted group without its row, nor two rows.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.executor import Executor, Handle, make_executor
from dsa110_ingest.convert.request import ConversionRequest, InputFile
from dsa110_ingest.db import IndexStore, ProductsStore, open_index, open_products
from dsa110_ingest.db.records import FileRecord
from dsa110_ingest.db.retry import busy_retry
from dsa110_ingest.errors import ConversionError, DatabaseError, TransientConversionError

log = structlog.get_logger("dsa110_ingest.convert")


def ms_path_for(cfg: Config, group_id: str) -> str:
    name = cfg.convert.ms_name.format(group_id=group_id)
    return str(cfg.convert.output_dir / name)


def build_request(
    cfg: Config, db: IndexStore, group_id: str, *, force: bool = False, partial: bool = False
) -> ConversionRequest:
    g = db.group(group_id)
    if g is None:
        raise ConversionError(f"group {group_id} is not in {db.name}; see `dsa110-ingest groups`")
    files = db.group_files(group_id)
    present = [f for f in files if f.stored]
    gone = [f.path for f in files if not f.stored]
    if gone:
        raise ConversionError(
            f"group {group_id}: {len(gone)} file(s) no longer on disk, e.g. "
            f"{gone[0]}; restore them, or `retry` after they are back"
        )
    have = {f.subband_num for f in present}
    missing = tuple(f"sb{i:02d}" for i in range(g.expected_subbands) if i not in have)
    if missing and not (partial or force):
        raise ConversionError(
            f"group {group_id} is missing {', '.join(missing)}; an incomplete "
            "group is converted only with [convert] "
            "convert_incomplete_after_seconds, or with --force"
        )
    c = cfg.convert
    return ConversionRequest(
        phasing=c.phasing,
        pointing_dec_deg=c.pointing_dec_deg,
        time_tolerance_s=c.time_tolerance_seconds or None,
        min_time_overlap=c.min_time_overlap,
        imaging_columns=c.imaging_columns,
        telescope_name=c.telescope_name or None,
        group_id=group_id,
        inputs=tuple(InputFile(f.path, f.subband_num, f.freq_min_hz, f.n_freqs) for f in present),
        output=ms_path_for(cfg, group_id),
        backend=c.backend,
        command=c.command,
        timeout_s=c.timeout_seconds,
        partial=bool(missing),
        missing_subbands=missing,
        meta={
            "force": force,
            "start_mjd": g.start_mjd,
            "end_mjd": g.end_mjd,
            "ra_deg": _mean(present, "ra_deg"),
            "dec_deg": _mean(present, "dec_deg"),
        },
    )


def _mean(rows: list[FileRecord], key: str) -> float | None:
    vals = [getattr(r, key) for r in rows if getattr(r, key) is not None]
    return sum(vals) / len(vals) if vals else None


def ms_row(req: ConversionRequest, result: dict[str, Any], now: float) -> dict[str, Any]:
    m = req.meta
    start, end = m.get("start_mjd"), m.get("end_mjd")
    return {
        "path": result["ms_path"],
        "group_id": req.group_id,
        "start_mjd": start,
        "end_mjd": end,
        "mid_mjd": (start + end) / 2 if start is not None and end is not None else None,
        # the MS's own mid-time phase centre; the files' drift-scan centre only for an MS
        # whose writer did not report one
        "ra_deg": result.get("ra_deg", m.get("ra_deg")),
        "dec_deg": result.get("dec_deg", m.get("dec_deg")),
        "status": "converted",
        "stage": "converted",
        "processed_at": now,
        "stage_updated_at": now,
        "n_subbands": len(req.inputs),
        "missing_subbands": ",".join(req.missing_subbands) or None,
        "n_channels": result.get("n_channels"),
        "freq_min_hz": result.get("freq_min_hz"),
        "freq_max_hz": result.get("freq_max_hz"),
    }


# what the worker reports about the MS recipe, copied into the group.converted payload
RECIPE_KEYS = (
    "phasing",
    "pointing_dec_deg",
    "pointing_dec_source",
    "n_integrations",
    "max_time_offset_s",
    "flagged_subband_integrations",
)
# below this much free space in output_dir, a failure is taken for a full disk
LOW_SPACE_BYTES = 64 << 20


def classify(cfg: Config, error: str | ConversionError) -> ConversionError:
    """The failure as a classified error. An unclassified one (a killed worker, a
    converter's bare exit status) is checked against the free space of ``output_dir``:
    a full disk is the node's condition, not the group's (a SIGABRT from casacore is
    all a full disk shows otherwise)."""
    err = error if isinstance(error, ConversionError) else ConversionError(error)
    if err.permanent or not err.counts:
        return err
    try:
        free = worker.free_bytes(cfg.convert.output_dir)
    except OSError:
        return err
    if free < LOW_SPACE_BYTES:
        return TransientConversionError(
            f"output disk full (ENOSPC): {cfg.convert.output_dir} has "
            f"{free / 2**20:.1f} MiB free; free space there or point [convert] output_dir "
            f"elsewhere (retried without using up an attempt). The conversion said: {err}"
        )
    return err


def backoff(cfg: Config, attempts: int) -> float:
    c = cfg.convert
    return min(c.backoff_max_seconds, c.backoff_initial_seconds * 2 ** max(0, attempts - 1))


class Recorder:
    """The two writes that end a conversion, in the order that keeps them consistent."""

    def __init__(
        self,
        cfg: Config,
        hdf5: IndexStore,
        products: ProductsStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.hdf5 = hdf5
        self.products = products
        self.clock = clock

    def current(self, req: ConversionRequest) -> bool:
        """Fencing: is ``req`` still the group's running attempt? A given-up attempt
        (timed out, lease lost, re-claimed elsewhere) must never register its result."""
        if not req.token:
            return True  # a foreground `convert`: no claimed attempt to fence
        job = self.hdf5.job(req.group_id)
        return job is not None and job.state == "running" and job.attempt_token == req.token

    def success(self, req: ConversionRequest, result: dict[str, Any], owner: str | None) -> bool:
        now = self.clock()
        if not self.current(req):
            log.warning(
                "convert.stale_result",
                group_id=req.group_id,
                ms_path=result.get("ms_path"),
                hint="a late result of a given-up attempt; not registered",
            )
            return False

        @busy_retry(max_seconds=300)
        def write_products() -> None:
            self.products.upsert_ms(ms_row(req, result, now))

        write_products()  # raises DatabaseError: the caller turns it into a retry

        @busy_retry(max_seconds=300)
        def write_hdf5() -> bool:
            with self.hdf5.transaction(f"recording conversion of {req.group_id}"):
                ok = self.hdf5.finish_job(
                    req.group_id,
                    owner,
                    "converted",
                    now,
                    ms_path=result["ms_path"],
                    token=req.token,
                )
                if ok:
                    self.hdf5.add_event(
                        ev.GROUP_CONVERTED,
                        req.group_id,
                        {
                            "ms_path": result["ms_path"],
                            "skipped": result.get("skipped", False),
                            "seconds": round(result.get("seconds", 0.0), 3),
                            "missing_subbands": list(req.missing_subbands),
                            **{k: result[k] for k in RECIPE_KEYS if k in result},
                        },
                        now,
                    )
                return ok

        ok = write_hdf5()
        if ok:
            log.info(
                ev.GROUP_CONVERTED,
                group_id=req.group_id,
                ms_path=result["ms_path"],
                skipped=result.get("skipped", False),
                seconds=round(result.get("seconds", 0.0), 1),
            )
        else:
            log.warning(
                "convert.lease_lost",
                group_id=req.group_id,
                hint="another worker took the group over; its result stands",
            )
        return ok

    def transient(self, req: ConversionRequest, owner: str, error: str) -> None:
        """The executor lost the attempt (scheduler, cancelled task): the group waits
        ``backoff_initial_seconds`` and is retried; the attempt does not count."""
        now = self.clock()
        delay = self.cfg.convert.backoff_initial_seconds

        @busy_retry(max_seconds=300)
        def write() -> bool:
            with self.hdf5.transaction(f"requeueing {req.group_id}"):
                return self.hdf5.requeue_job(
                    req.group_id, owner, req.token, now, error, now + delay
                )

        write()
        log.warning("convert.requeued", group_id=req.group_id, error=error, retry_in_seconds=delay)

    def failure(self, group_id: str, owner: str | None, error: str | ConversionError) -> str:
        """Record a failed attempt: ``"failed"`` (permanent, or attempts used up),
        ``"retry"`` (counted) or ``"wait"`` (a node condition: retried, not counted)."""
        now = self.clock()
        err = classify(self.cfg, error)
        message = str(err)
        job = self.hdf5.job(group_id)
        attempts = int(job.attempts) if job else 1

        @busy_retry(max_seconds=300)
        def write() -> str:
            with self.hdf5.transaction(f"recording failed conversion of {group_id}"):
                if err.permanent or (err.counts and attempts >= self.cfg.convert.max_attempts):
                    self.hdf5.finish_job(group_id, owner, "failed", now, error=message)
                    self.hdf5.add_event(
                        ev.GROUP_FAILED,
                        group_id,
                        {"error": message, "attempts": attempts, "kind": err.kind},
                        now,
                    )
                    return "failed"
                self.hdf5.finish_job(
                    group_id,
                    owner,
                    "pending",
                    now,
                    error=message,
                    next_attempt_at=now + backoff(self.cfg, attempts),
                    refund_attempt=not err.counts,
                )
                return "retry" if err.counts else "wait"

        outcome = write()
        log.error(
            "convert.failed",
            group_id=group_id,
            error=message,
            kind=err.kind,
            attempts=attempts,
            max_attempts=self.cfg.convert.max_attempts,
            outcome=outcome,
            hint={
                "failed": "`dsa110-ingest retry " + group_id + "` after fixing the cause",
                "retry": "retried with backoff",
                "wait": "a condition of this node: retried with backoff, no attempt used up",
            }[outcome],
        )
        return outcome


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
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[str, tuple[Handle, ConversionRequest]] = {}
        self._warned: set[str] = set()  # running conversions already reported as slow
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.completed = 0
        self.failed: set[str] = set()  # groups this dispatcher saw fail for good
        self.waiting_on_node: set[str] = set()  # pending because of a node condition
        self.waiting: str | None = None  # why conversions cannot start now
        self.transient_failures = 0

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
        last_renew = 0.0
        try:
            while not self._stop.is_set():
                self._reap(hdf5, rec)
                now = self.clock()
                lease = self.cfg.convert.lease_seconds
                if now - last_renew >= lease / 3:
                    for gid in list(self.running):
                        if not hdf5.renew_lease(gid, self.owner, now + lease):
                            self._give_up(gid, "lease lost (expired, re-claimed elsewhere)")
                    last_renew = now
                limit = self._limit()
                while len(self.running) < limit and not self._stop.is_set():
                    if not self._claim_one(hdf5, rec):
                        break
                self.wake.wait(0.2 if self.running else 1.0)
                self.wake.clear()
        except BaseException as e:
            self.error = e
            log.exception("convert.dispatcher_died")
        finally:
            self._abandon(hdf5)
            self.executor.close()
            hdf5.close()
            products.close()

    def _limit(self) -> int:
        """How many conversions may run now; records and logs why none can start."""
        limit = self.cfg.convert.workers
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

    def _give_up(self, gid: str, why: str) -> None:
        """Stop an attempt whose lease is gone: its result, if any, is never recorded."""
        h, _req = self.running.pop(gid)
        h.kill()
        self._forget(h)
        self._warned.discard(gid)
        log.warning("convert.lease_lost", group_id=gid, reason=why)

    def describe(self) -> dict[str, Any]:
        """The executor and what runs on it, for `status` and the metrics."""
        return {
            **self.executor.describe(),
            "running": sorted(self.running),
            "waiting": self.waiting,
            "transient_failures": self.transient_failures,
        }

    def _forget(self, h: Handle) -> None:
        forget = getattr(self.executor, "forget", None)
        if forget is not None:
            forget(h)

    def _claim_one(self, hdf5: IndexStore, rec: Recorder) -> bool:
        c = self.cfg.convert
        job = hdf5.claim_job(self.owner, self.clock(), c.lease_seconds, c.order == "newest_first")
        if job is None:
            return False
        gid = job.group_id
        try:
            req = build_request(self.cfg, hdf5, gid, partial=bool(job.partial))
        except ConversionError as e:
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
        try:
            handle = self.executor.submit(req)
        except OSError as e:
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
            self._warned.discard(gid)
            result, error = h.result()
            self._forget(h)
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
            self.completed += 1

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
        why = worker._validate(req, path)
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
            h.kill()
            self._forget(h)
            try:
                hdf5.release_job(gid, self.owner, self.clock())
            except DatabaseError:
                log.warning(
                    "convert.release_failed",
                    group_id=gid,
                    hint="the lease expires and the group is retried",
                )
        self.running.clear()
