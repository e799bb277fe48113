"""A group leaves ``collecting``: ``complete`` with its last expected subband, or
``incomplete`` when its timeout passes first. Each change writes its event (and the
conversion job) in the caller's transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.db import IndexStore
from dsa110_ingest.db.records import Group
from dsa110_ingest.db.retry import busy_retry
from dsa110_ingest.naming import missing_subbands

log = structlog.get_logger("dsa110_ingest.indexer")

Clock = Callable[[], float]
Event = tuple[str, str]  # (type, group_id)
# states a file's arrival can still complete (a late file completes an incomplete group)
COMPLETABLE = ("collecting", "incomplete")


def is_complete(group: Group) -> bool:
    return group.state in COMPLETABLE and group.n_subbands >= group.expected_subbands


def complete_group(db: IndexStore, group: Group, now: float, convert: bool) -> Event:
    """``group.complete``, and the conversion job when conversion is on."""
    gid = group.group_id
    files = db.group_files(gid)
    db.set_group_state(gid, "complete", now)
    payload = {
        "n_subbands": group.n_subbands,
        "start_mjd": group.start_mjd,
        "end_mjd": group.end_mjd,
        "files": [f.path for f in files],
    }
    db.add_event(ev.GROUP_COMPLETE, gid, payload, now)
    if convert:
        db.enqueue_job(gid, group.start_mjd, now)
    return (ev.GROUP_COMPLETE, gid)


class Expiry:
    """Which ``collecting`` groups are past ``incomplete_timeout_seconds``, on the
    monotonic clock: a timeout must not fire early when the wall clock jumps forward,
    nor never when it jumps back."""

    def __init__(
        self, db: IndexStore, cfg: Config, *, clock: Clock = time.time, mono: Clock = time.monotonic
    ) -> None:
        self.db, self.cfg, self.clock, self.mono = db, cfg, clock, mono
        # monotonic time each collecting group was first seen by this process
        self._born: dict[str, float] = {}

    def born(self, gid: str) -> None:
        """A group was created now (by this process)."""
        self._born[gid] = self.mono()

    def expire(self, *, full_rescan: bool, convert: bool) -> list[Event]:
        """Emit ``group.incomplete`` for collecting groups past their deadline, and (with
        ``convert``) queue the incomplete groups old enough to convert as they are.

        After a full rescan every file present has been seen, so a group observed more
        than the timeout ago cannot be waiting for a file still being written.
        """
        now = self.clock()
        obs_before = now - self.cfg.groups.incomplete_timeout_seconds if full_rescan else None
        out: list[Event] = []

        @busy_retry()
        def write() -> None:
            out.clear()
            with self.db.transaction("expiring incomplete groups"):
                out.extend(self._mark_incomplete(self._expired(obs_before), now))
                if convert:
                    self._queue_partial(now, full_rescan)

        write()
        for etype, gid in out:
            log.warning(etype, group_id=gid)
        return out

    def _mark_incomplete(self, groups: list[Group], now: float) -> list[Event]:
        out: list[Event] = []
        for group in groups:
            gid = group.group_id
            have = (f.subband_num for f in self.db.group_files(gid))
            missing = missing_subbands(have, self.cfg.groups.expected_subbands)
            self.db.set_group_state(gid, "incomplete", now)
            payload = {
                "n_subbands": group.n_subbands,
                "missing": missing,
                "start_mjd": group.start_mjd,
                "end_mjd": group.end_mjd,
            }
            self.db.add_event(ev.GROUP_INCOMPLETE, gid, payload, now)
            out.append((ev.GROUP_INCOMPLETE, gid))
        return out

    def _queue_partial(self, now: float, full_rescan: bool) -> None:
        conv = self.cfg.convert
        if conv.convert_incomplete_after_seconds <= 0:
            return
        after = now - conv.convert_incomplete_after_seconds
        for group in self.db.partial_candidates(
            after, conv.min_subbands, after if full_rescan else None
        ):
            self.db.enqueue_job(group.group_id, group.start_mjd, now, True)

    def _expired(self, obs_before: float | None) -> list[Group]:
        timeout = self.cfg.groups.incomplete_timeout_seconds
        mono, now = self.mono(), self.clock()
        collecting = self.db.collecting_groups()
        born = {}
        for group in collecting:
            first = self._born.get(group.group_id)
            if first is None:
                # first sight in this process (created before a restart, or renamed): credit
                # the wall time it has already waited, never more than one timeout
                first = mono - min(max(0.0, now - group.first_seen_at), timeout)
            born[group.group_id] = first
        self._born = born  # forget groups that are no longer collecting
        old = set()
        if obs_before:
            old = {g.group_id for g in self.db.collecting_groups(obs_before)}
        return [g for g in collecting if mono - born[g.group_id] >= timeout or g.group_id in old]
