"""``run --rescan``: one pass over every location with the live path's indexer, then the
same loop as the daemon's in burst mode (arq's ``burst``) until the conversions that
pass queued are drained; then it exits.

It takes the daemon's lock: beside a running daemon it refuses (one line naming the
daemon's pid) rather than race it; see docs/operations.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from dsa110_ingest import logs
from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.db import IndexStore
from dsa110_ingest.ingest.indexer import BatchResult
from dsa110_ingest.service.health import Health
from dsa110_ingest.service.loop import EXIT_FATAL, EXIT_OK, Loop, Phase
from dsa110_ingest.service.report import batch_summary, error_line, tell
from dsa110_ingest.service.runtime import Runtime
from dsa110_ingest.service.work import TURN_S, Work


def rescan(rt: Runtime, progress: bool, started: float) -> int:
    """Exit status: 1 when a location is missing or a conversion of this pass failed."""
    health = Health(rt)
    result = _index_all(rt, health, progress)
    Work(rt, health).publish(result)
    batch_summary("rescan", result, time.monotonic() - started)
    if result.stopped:
        tell(
            "rescan: stopped by a signal; what was indexed is kept, the next "
            "`run --rescan` (or `run`) goes on from there",
            "rescan.stopped",
            "warning",
        )
        return EXIT_FATAL
    conversions_ok = _drain_conversions(rt, rt.dispatcher, progress) if rt.dispatcher else True
    for loc in result.missing_locations:
        error_line(
            f"storage location {loc} does not exist; mount or create it, or remove "
            "it from the config",
            "rescan.location_missing",
        )
    return EXIT_FATAL if result.missing_locations or not conversions_ok else EXIT_OK


def _index_all(rt: Runtime, health: Health, progress: bool) -> BatchResult:
    if not progress:
        return rt.indexer.reconcile(
            on_progress=health.progress_reporter(), obs_expiry=True, stop=_stop(rt)
        )
    with logs.ProgressBar("files") as bar:

        def on_progress(done: int, total: int) -> None:
            rt.flags.check_forced()
            bar(done, total)

        return rt.indexer.reconcile(on_progress=on_progress, obs_expiry=True, stop=_stop(rt))


def _stop(rt: Runtime) -> Callable[[], bool]:
    """SIGINT/SIGTERM ends the pass at its next batch (every batch before stays)."""
    return lambda: rt.flags.should_exit


class _Drain:
    """Burst-mode phases: done once every open job is converted, failed, or waits on a
    condition of this node (a full disk is not retried within one pass)."""

    def __init__(
        self, db: IndexStore, d: Dispatcher, total: int, bar: Callable[[int, int], None] | None
    ) -> None:
        self.db = db
        self.d = d
        self.total = total
        self.bar = bar
        self.waiting: str | None = None

    def drained(self) -> bool:
        if not self.d.alive() or self.d.claim_problem:
            return True  # nothing more can be converted in this pass
        left = self.db.jobs_open()
        if self.bar is not None:
            self.bar(self.total - min(left, self.total), self.total)
        return left <= len(self.d.waiting_on_node)

    def note_waiting(self) -> None:
        """Say once why conversions cannot start (e.g. the Dask scheduler is down)."""
        if self.d.waiting != self.waiting:
            self.waiting = self.d.waiting
            if self.waiting:
                tell(
                    f"rescan: conversions waiting: {self.waiting}",
                    "rescan.conversions_waiting",
                    "warning",
                    reason=self.waiting,
                )


def _drain_conversions(rt: Runtime, d: Dispatcher, progress: bool) -> bool:
    """False when a group failed in this pass or waits on a node condition."""
    open_jobs = rt.db.jobs_open()
    if not open_jobs:
        return True
    tell(f"rescan: converting {open_jobs} group(s)", "rescan.converting", groups=open_jobs)
    before = rt.db.state_counts()[1]
    d.start()
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(logs.ProgressBar("groups converted")) if progress else None
        drain = _Drain(rt.db, d, open_jobs, bar)
        phases = [Phase("waiting", drain.note_waiting), Phase("pause", lambda: time.sleep(TURN_S))]
        Loop(phases, [], rt.flags, drained=drain.drained).run()
    _report_pass(before, rt.db.state_counts()[1], rt.db.jobs_open())
    if d.claim_problem:
        tell(
            f"rescan: {d.claim_problem}",
            "rescan.output_dir_refused",
            "error",
            error=d.claim_problem,
        )
        return False
    for gid in sorted(d.failed | d.waiting_on_node):
        job = rt.db.job(gid)
        what = "failed" if gid in d.failed else "waits on this node"
        error = job.last_error if job else ""
        tell(
            f"rescan: {gid} {what}: {error}",
            "rescan.conversion_not_done",
            "error",
            group_id=gid,
            outcome=what,
            error=error,
        )
    return not (d.failed or d.waiting_on_node)


def _report_pass(before: dict[str, int], after: dict[str, int], left: int) -> None:
    """What this pass's drain did: the lock keeps a daemon away meanwhile, so the growth
    of each finished state is this pass's count (the database's totals are `status`'s)."""
    done = {s: max(0, after.get(s, 0) - before.get(s, 0)) for s in ("converted", "failed")}
    tell(
        f"rescan: conversions in this pass: {done['converted']} converted, "
        f"{done['failed']} failed, {left} not done (pending or waiting)",
        "rescan.conversions",
        **done,
        not_done=left,
    )
