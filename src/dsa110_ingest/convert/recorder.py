"""The writes that end a conversion attempt, in the order that keeps them consistent:
the MS in ``ms_index`` first, then the job ``converted`` and ``group.converted`` in one
transaction (see convert/dispatcher.py for why this order gives "exactly once"); or the
failure, classified, with the group's next attempt put off by the conversion backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.backoff import Backoff
from dsa110_ingest.convert.request import ConversionRequest, ms_row
from dsa110_ingest.db import IndexStore, ProductsStore
from dsa110_ingest.db.records import ConversionJob
from dsa110_ingest.db.retry import busy_retry
from dsa110_ingest.errors import ConversionError, TransientConversionError
from dsa110_ingest.leases import holder_of

log = structlog.get_logger("dsa110_ingest.convert")


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
        self.backoff = Backoff(cfg.convert.backoff_initial_seconds, cfg.convert.backoff_max_seconds)

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
        delay = self.backoff.initial

        @busy_retry(max_seconds=300)
        def write() -> bool:
            with self.hdf5.transaction(f"requeueing {req.group_id}"):
                return self.hdf5.requeue_job(
                    req.group_id, owner, req.token, now, error, now + delay
                )

        write()
        log.warning("convert.requeued", group_id=req.group_id, error=error, retry_in_seconds=delay)

    def lapsed(self, job: ConversionJob) -> bool:
        """A running job whose lease expired with its attempts used up (each attempt's
        daemon killed or crashed mid-conversion: OOM, a segfault in the writer): failed
        for good with the reason and the fix, ``group.failed`` in the same transaction.
        False when another claimer failed it first, or its holder renewed it."""
        now = self.clock()
        gid, max_attempts = job.group_id, self.cfg.convert.max_attempts
        holder = holder_of(job.lease_owner)
        last = f"pid {holder.pid} on {holder.host}" if holder else str(job.lease_owner)
        message = (
            f"the conversion's lease was lost {job.attempts} times, on all {job.attempts} "
            f"attempts (max_attempts {max_attempts}): each attempt's daemon stopped renewing "
            f"it mid-conversion (last {last}), i.e. it was killed or crashed (out of memory, "
            "a segfault in the writer, SIGKILL); not retried again, so that it cannot take "
            "the daemon down for ever. Look at the log and `journalctl -u dsa110-ingest` "
            "around the attempts, fix the cause (memory, the input files), then "
            f"`dsa110-ingest retry {gid}`"
        )

        @busy_retry(max_seconds=300)
        def write() -> bool:
            with self.hdf5.transaction(f"failing lapsed conversion of {gid}"):
                if not self.hdf5.fail_lapsed_job(gid, job.attempt_token or "", now, message):
                    return False
                payload = {"error": message, "attempts": job.attempts, "kind": "lease_lost"}
                self.hdf5.add_event(ev.GROUP_FAILED, gid, payload, now)
                return True

        if not write():
            return False
        log.error(
            "convert.failed",
            group_id=gid,
            error=message,
            kind="lease_lost",
            attempts=job.attempts,
            max_attempts=max_attempts,
            outcome="failed",
            hint=f"`dsa110-ingest retry {gid}` after fixing the cause",
        )
        return True

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
                    next_attempt_at=now + self.backoff.delay(attempts),
                    refund_attempt=not err.counts,
                )
                return "retry" if err.counts else "wait"

        outcome = write()
        log.error(
            "convert.output_claim_lost" if err.kind == "claim_lost" else "convert.failed",
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
