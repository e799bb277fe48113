"""Indexing: candidates in, file rows, group changes and events out, in transactions.

This is the one code path for every way a file is found: the live watcher, the
periodic reconcile, ``run --rescan`` and ``index-hdf5`` all end in :meth:`Indexer.process`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config, StorageLocation
from dsa110_ingest.db import IndexStore
from dsa110_ingest.db.records import Group
from dsa110_ingest.db.retry import busy_retry
from dsa110_ingest.ingest.grouping import Band, join_group, overlaps, suspect
from dsa110_ingest.ingest.reader import HeaderReader, ReadFailure
from dsa110_ingest.ingest.scanner import Candidate, scan_tree, stat_path
from dsa110_ingest.naming import NameParser, missing_subbands, path_text
from dsa110_ingest.times import mjd_to_unix, unix_to_mjd
from dsa110_ingest.uvh5 import HeaderInfo

log = structlog.get_logger("dsa110_ingest.indexer")

Clock = Callable[[], float]


@dataclass
class BatchResult:
    indexed: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    rejected: int = 0
    missing: int = 0
    deferred: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (type, group_id)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    missing_locations: list[str] = field(default_factory=list)
    completed_by: dict[str, str] = field(default_factory=dict)  # group_id -> last file

    def add(self, other: BatchResult) -> None:
        for k in ("indexed", "updated", "moved", "unchanged", "rejected", "missing"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.deferred += other.deferred
        self.completed_by.update(other.completed_by)
        self.events += other.events
        self.rejections += other.rejections
        self.missing_locations += other.missing_locations

    @property
    def seen(self) -> int:
        return self.indexed + self.updated + self.moved + self.unchanged + self.rejected


class Indexer:
    def __init__(
        self,
        db: IndexStore,
        cfg: Config,
        *,
        clock: Clock = time.time,
        mono: Clock = time.monotonic,
        reader: HeaderReader | None = None,
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self.mono = mono
        # monotonic time each open group was first seen by this process: timeouts must not
        # fire early when the wall clock jumps forward, nor never when it jumps back
        self._born: dict[str, float] = {}
        self.parser = NameParser(cfg.pattern, cfg.groups.expected_subbands)
        self.reader = reader or HeaderReader(
            cfg.read.hdf5_locking, cfg.read.workers, deadline_s=cfg.read.deadline_seconds
        )
        self.locations: list[tuple[int, StorageLocation]] = []
        self.roots: tuple[str, ...] = ()
        self.convert_enabled = cfg.convert.enabled

    def register_locations(
        self, extra: Sequence[StorageLocation] = (), within: Sequence[StorageLocation] = ()
    ) -> None:
        """Register the locations to scan and watch. Every path is normalised here, once
        (``realpath``: no ``..``, no symlinked folders), and every file path is built from
        these, so one file has one spelling whichever way it was reached.

        ``within`` are configured locations that are not scanned this time: an ad-hoc
        folder inside one of them is indexed as part of it (same location id), not as a
        location of its own.
        """
        self.locations = []
        outer: list[tuple[int, str]] = []
        for loc in within:
            real = os.path.realpath(loc.path)
            lid = self.db.ensure_location(
                loc.name, real, loc.role, loc.description, node=self.cfg.node
            )
            outer.append((lid, real))
        for loc in (*self.cfg.storage_locations, *extra):
            loc = dataclasses.replace(loc, path=Path(os.path.realpath(loc.path)))
            real = str(loc.path)
            home = next((i for i, r in outer if real == r or real.startswith(r + os.sep)), None)
            if home is None:
                home = self.db.ensure_location(
                    loc.name, real, loc.role, loc.description, node=self.cfg.node
                )
            self.locations.append((home, loc))
        self.roots = tuple(str(loc.path) for _, loc in self.locations) + tuple(r for _, r in outer)

    @staticmethod
    def normalise(path: str) -> str:
        """The one spelling of a file's path: its folder resolved, its own name kept (a
        symlinked file stays a link, checked for where it leads)."""
        d, name = os.path.split(os.path.abspath(path))
        return os.path.join(os.path.realpath(d), name)

    def location_of(self, path: str) -> tuple[int, StorageLocation] | None:
        for lid, loc in self.locations:
            root = str(loc.path)
            if path.startswith(root + os.sep):
                if not loc.recursive and os.path.dirname(path) != root:
                    return None
                return lid, loc
        return None

    def close(self) -> None:
        self.reader.close()

    # -- entry points -------------------------------------------------------------
    def index_paths(self, paths: Iterable[str]) -> BatchResult:
        """Files named by watcher events: stat them and index what is new or changed."""
        cands: list[Candidate] = []
        for p in dict.fromkeys(self.normalise(p) for p in paths):
            loc = self.location_of(p)
            if loc is None:
                continue
            c = stat_path(p, loc[0], self.parser, self.roots)
            if c is not None and not self._unchanged(c):
                cands.append(c)
        return self.process(cands)

    def reconcile(
        self, on_progress: Callable[[int, int], None] | None = None, obs_expiry: bool = False
    ) -> BatchResult:
        """Compare every location with the DB and take whatever events missed."""
        total = BatchResult()
        rejected = self.db.known_rejected()
        for lid, loc in self.locations:
            if not loc.path.is_dir():
                total.missing_locations.append(f"{loc.name} ({loc.path})")
                log.error(
                    "location.missing",
                    location=loc.name,
                    path=str(loc.path),
                    hint="mount or create it; its files are not marked missing meanwhile",
                )
                continue
            known = self.db.known_files(lid)
            todo: list[Candidate] = []
            seen: set[str] = set()
            for c in scan_tree(loc.path, loc.recursive, lid, self.parser, self.roots):
                seen.add(c.path)
                key = path_text(c.path)  # how a name that is not UTF-8 is stored
                k = known.get(c.path) or rejected.get(key)
                if (
                    k is not None
                    and k.size == c.size
                    and k.mtime_ns == c.mtime_ns
                    and (k.stored or key in rejected)
                ):
                    total.unchanged += 1
                    continue
                todo.append(c)
            total.add(self.process(todo, on_progress=on_progress))
            gone = [p for p, k in known.items() if k.stored and p not in seen]
            if gone and loc.path.is_dir():
                total.missing += self.mark_missing(gone)
            elif gone:
                log.warning(
                    "location.unavailable",
                    location=loc.name,
                    path=str(loc.path),
                    hint="files not marked missing while the location is absent; check the mount",
                )
        total.events += self.expire_groups(full_rescan=obs_expiry)
        return total

    def mark_missing(self, paths: Sequence[str]) -> int:
        paths = [p for p in paths if not os.path.exists(p)]
        if not paths:
            return 0

        @busy_retry()
        def write() -> int:
            with self.db.transaction("marking deleted files"):
                return self.db.mark_missing(paths)

        n = write()
        if n:
            log.info("files.missing", count=n, example=paths[0])
        return n

    # -- the core -------------------------------------------------------------------
    def _unchanged(self, c: Candidate) -> bool:
        row = self.db.get_file(c.path)
        return bool(
            row and row.stored and row.file_size_bytes == c.size and row.mtime_ns == c.mtime_ns
        )

    def process(
        self, cands: Sequence[Candidate], on_progress: Callable[[int, int], None] | None = None
    ) -> BatchResult:
        """Index candidates oldest observation first, ``batch_size`` files a transaction."""
        result = BatchResult()
        cands = sorted(cands, key=lambda c: c.sort_key)
        readable = [c for c in cands if c.name is not None and not c.symlink_escape]
        headers = self.reader.read_many([c.path for c in readable])
        by_path = iter(zip(readable, headers, strict=True))
        bs = max(1, self.cfg.read.batch_size)
        done = 0
        pending: list[tuple[Candidate, HeaderInfo | ReadFailure | None]] = []
        for c in cands:
            if c.name is None or c.symlink_escape:
                pending.append((c, None))
            else:
                rc, h = next(by_path)
                pending.append((rc, h))
            if len(pending) >= bs:
                result.add(self._apply_batch(pending))
                done += len(pending)
                pending = []
                if on_progress:
                    on_progress(done, len(cands))
        if pending:
            result.add(self._apply_batch(pending))
            if on_progress:
                on_progress(len(cands), len(cands))
        for etype, gid in result.events:
            log.info(etype, group_id=gid)
        return result

    @busy_retry()
    def _apply_batch(
        self, items: list[tuple[Candidate, HeaderInfo | ReadFailure | None]]
    ) -> BatchResult:
        r = BatchResult()
        now = self.clock()
        with self.db.transaction(f"indexing {len(items)} file(s)"):
            for c, h in items:
                self._apply_one(c, h, now, r)
        for path, msg in r.rejections:
            log.warning("file.rejected", path=path_text(path), reason=msg)
        return r

    def _reject(self, c: Candidate, reason: str, message: str, now: float, r: BatchResult) -> None:
        self.db.reject(c.path, reason, message, c.size, c.mtime_ns, c.location_id, now)
        r.rejected += 1
        r.rejections.append((path_text(c.path), message))

    def _apply_one(
        self, c: Candidate, h: HeaderInfo | ReadFailure | None, now: float, r: BatchResult
    ) -> None:
        if c.symlink_escape:
            self._reject(
                c,
                "symlink_outside",
                "symlink points outside every storage location; "
                "not followed (copy the file in instead)",
                now,
                r,
            )
            return
        if c.name_error is not None or c.name is None:
            err = c.name_error
            self._reject(c, "misnamed", f"{err.detail} ({err.fix})" if err else "misnamed", now, r)
            return
        if isinstance(h, ReadFailure):
            if h.retryable:
                r.deferred.append(c.path)
            elif h.reason == "vanished":
                r.missing += self.db.mark_missing([c.path])
            else:
                self._reject(c, h.reason, h.message, now, r)
            return
        assert h is not None
        skew = abs(c.name.timestamp_unix - mjd_to_unix(h.start_mjd))
        if skew > self.cfg.groups.max_header_skew_seconds + h.integration_time_s:
            self._reject(
                c,
                "time_mismatch",
                f"timestamp in the name is {skew:.0f} s from the "
                f"header's first integration (limit "
                f"{self.cfg.groups.max_header_skew_seconds:.0f} s); the file is "
                "misnamed or its header is wrong",
                now,
                r,
            )
            return

        same_name = self.db.files_named(c.filename)
        existing = next((f for f in same_name if f.path == c.path), None)
        if existing is not None and existing.group_id is not None:
            # rewritten in place, or back after a disappearance: same name, same group
            gid = existing.group_id
            dup = existing.is_duplicate
            grow = self.db.group(gid)
            retry = (
                dup
                and grow is not None
                and grow.state in ("collecting", "incomplete")
                and not self.db.subband_taken(gid, c.name.subband_num)
            )
            # a file once out of the count (a frequency conflict) and now rewritten, with
            # its slot still free, is judged again: the replacement may be the real one
            self.db.upsert_file(self._row(c, h, gid, 0 if retry else dup, now))
            self.db.unreject(c.path)
            r.updated += 1
            if retry:
                self._check_frequencies(c, h, gid, now, r)
                grow = self.db.refresh_group(gid, grow.min_ts, grow.max_ts, now)
                if grow.n_subbands >= grow.expected_subbands:
                    self._complete(grow, now, r)
                    r.completed_by[gid] = c.path
            return
        for twin in self.db.files_named(c.filename):
            if (
                twin.path != c.path
                and twin.file_size_bytes == c.size
                and (
                    not twin.stored
                    or not os.path.exists(twin.path)
                    # the same file under an older spelling (`..`, a symlinked folder)
                    or os.path.realpath(twin.path) == os.path.realpath(c.path)
                )
            ):
                self.db.move_file(
                    twin.path, c.path, c.location_id, c.size, c.mtime_ns / 1e9, c.mtime_ns
                )
                log.info("file.moved", src=twin.path, dst=c.path, group_id=twin.group_id)
                r.moved += 1
                return

        pl, dup = join_group(
            self.db, c.name.timestamp_unix, c.name.subband_num, self.cfg.groups, now
        )
        gid = pl.group_id
        if pl.target is None:
            self._born[gid] = self.mono()
        self.db.upsert_file(self._row(c, h, gid, int(dup), now))
        self.db.unreject(c.path)
        r.indexed += 1
        if not dup:
            self._check_frequencies(c, h, gid, now, r)
        self._revise_frequency_verdicts(gid, now, r)
        grow = self.db.refresh_group(gid, pl.min_ts, pl.max_ts, now)
        if dup:
            self.db.add_event(
                ev.GROUP_CONFLICT,
                gid,
                {
                    "path": c.path,
                    "subband": c.name.subband_code,
                    "kept": [
                        f.path
                        for f in self.db.group_files(gid)
                        if f.subband_num == c.name.subband_num
                    ],
                },
                now,
            )
            r.events.append((ev.GROUP_CONFLICT, gid))
            log.warning("file.conflict", path=c.path, group_id=gid, subband=c.name.subband_code)
        if grow.state in ("collecting", "incomplete") and grow.n_subbands >= grow.expected_subbands:
            self._complete(grow, now, r)
            r.completed_by[gid] = c.path

    def _check_frequencies(
        self, c: Candidate, h: HeaderInfo, gid: str, now: float, r: BatchResult
    ) -> None:
        """Two members of a group with overlapping frequencies (one subband's data under
        another's name) are a conflict: the suspect leaves the subband count, so the group
        cannot complete or convert with the same frequencies twice."""
        assert c.name is not None
        new = Band(c.path, c.name.subband_num, h.freq_min_hz, h.freq_max_hz)
        members = [
            Band(f.path, f.subband_num, f.freq_min_hz, f.freq_max_hz)
            for f in self.db.group_files(gid)
            if f.path != c.path and f.freq_min_hz is not None
        ]
        for old in members:
            if not overlaps(new, old):
                continue
            bad, sure = suspect(new, old, [m for m in members if m.path != old.path])
            self.db.set_duplicate(bad.path, 1)
            self.db.add_event(
                ev.GROUP_CONFLICT,
                gid,
                {
                    "reason": "overlapping_frequencies",
                    "paths": [old.path, new.path],
                    "path": bad.path,
                    "subband": f"sb{bad.subband:02d}",
                    "suspect_by_band_plan": sure,
                    "freq_hz": {
                        old.path: [old.fmin, old.fmax],
                        new.path: [new.fmin, new.fmax],
                    },
                    "fix": "remove or replace the suspect file; the group completes once "
                    "every subband has a file with its own frequencies",
                },
                now,
            )
            r.events.append((ev.GROUP_CONFLICT, gid))
            log.warning(
                "file.frequency_conflict",
                group_id=gid,
                paths=[old.path, new.path],
                suspect=bad.path,
                suspect_by_band_plan=sure,
            )
            if bad is new:
                return

    def _revise_frequency_verdicts(self, gid: str, now: float, r: BatchResult) -> None:
        """A verdict made before the band plan was known (the later arrival was taken as
        the suspect) is revised once the other files show which one is off its band: in
        any arrival order the impostor ends up out, the genuine file in."""
        files = self.db.group_files(gid, members_only=False)
        members = [
            Band(f.path, f.subband_num, f.freq_min_hz, f.freq_max_hz)
            for f in files
            if not f.is_duplicate and f.freq_min_hz is not None
        ]
        held = {m.subband for m in members}
        excluded = [
            Band(f.path, f.subband_num, f.freq_min_hz, f.freq_max_hz)
            for f in files
            if f.is_duplicate and f.freq_min_hz is not None and f.subband_num not in held
        ]
        for x in excluded:
            for y in members:
                if not overlaps(x, y):
                    continue
                bad, sure = suspect(x, y, [m for m in members if m.path != y.path])
                if not (sure and bad is y):
                    continue
                self.db.set_duplicate(y.path, 1)
                self.db.set_duplicate(x.path, 0)
                members = [x if m is y else m for m in members]
                self.db.add_event(
                    ev.GROUP_CONFLICT,
                    gid,
                    {
                        "reason": "overlapping_frequencies",
                        "paths": [x.path, y.path],
                        "path": y.path,
                        "subband": f"sb{y.subband:02d}",
                        "suspect_by_band_plan": True,
                        "revised": True,
                        "fix": "remove or replace the suspect file",
                    },
                    now,
                )
                r.events.append((ev.GROUP_CONFLICT, gid))
                log.warning("file.frequency_conflict", group_id=gid, suspect=y.path, revised=True)
                break

    def _complete(self, grow: Group, now: float, r: BatchResult) -> None:
        gid = grow.group_id
        files = self.db.group_files(gid)
        self.db.set_group_state(gid, "complete", now)
        self.db.add_event(
            ev.GROUP_COMPLETE,
            gid,
            {
                "n_subbands": grow.n_subbands,
                "start_mjd": grow.start_mjd,
                "end_mjd": grow.end_mjd,
                "files": [f.path for f in files],
            },
            now,
        )
        if self.convert_enabled:
            self.db.enqueue_job(gid, grow.start_mjd, now)
        r.events.append((ev.GROUP_COMPLETE, gid))

    def expire_groups(self, full_rescan: bool = False) -> list[tuple[str, str]]:
        """Emit ``group.incomplete`` for open groups past their deadline.

        After a full rescan every file present has been seen, so a group observed more
        than the timeout ago cannot be waiting for a file still being written.
        """
        g = self.cfg.groups
        now = self.clock()
        obs_before = now - g.incomplete_timeout_seconds if full_rescan else None
        out: list[tuple[str, str]] = []

        @busy_retry()
        def write() -> None:
            out.clear()
            with self.db.transaction("expiring incomplete groups"):
                for grow in self._expired(obs_before):
                    gid = grow.group_id
                    have = (f.subband_num for f in self.db.group_files(gid))
                    missing = missing_subbands(have, g.expected_subbands)
                    self.db.set_group_state(gid, "incomplete", now)
                    self.db.add_event(
                        ev.GROUP_INCOMPLETE,
                        gid,
                        {
                            "n_subbands": grow.n_subbands,
                            "missing": missing,
                            "start_mjd": grow.start_mjd,
                            "end_mjd": grow.end_mjd,
                        },
                        now,
                    )
                    out.append((ev.GROUP_INCOMPLETE, gid))
                conv = self.cfg.convert
                if self.convert_enabled and conv.convert_incomplete_after_seconds > 0:
                    after = conv.convert_incomplete_after_seconds
                    for grow in self.db.partial_candidates(
                        now - after, conv.min_subbands, now - after if full_rescan else None
                    ):
                        self.db.enqueue_job(grow.group_id, grow.start_mjd, now, True)

        write()
        for etype, gid in out:
            log.warning(etype, group_id=gid)
        return out

    def _expired(self, obs_before: float | None) -> list[Group]:
        timeout = self.cfg.groups.incomplete_timeout_seconds
        m, now = self.mono(), self.clock()
        open_groups = self.db.open_groups()
        born = {}
        for grow in open_groups:
            b = self._born.get(grow.group_id)
            if b is None:
                # first sight in this process (created before a restart, or renamed): credit
                # the wall time it has already waited, never more than one timeout
                b = m - min(max(0.0, now - grow.first_seen_at), timeout)
            born[grow.group_id] = b
        self._born = born  # forget groups that are no longer open
        old = {r.group_id for r in self.db.open_groups(obs_before)} if obs_before else set()
        return [r for r in open_groups if m - born[r.group_id] >= timeout or r.group_id in old]

    def _row(self, c: Candidate, h: HeaderInfo, gid: str, dup: int, now: float) -> dict:
        assert c.name is not None
        date, _, tod = c.name.timestamp_iso.partition("T")
        return {
            "path": c.path,
            "filename": c.filename,
            "group_id": gid,
            "subband_code": c.name.subband_code,
            "subband_num": c.name.subband_num,
            "timestamp_iso": c.name.timestamp_iso,
            "timestamp_mjd": unix_to_mjd(c.name.timestamp_unix),
            "file_size_bytes": c.size,
            "modified_time": c.mtime_ns / 1e9,
            "indexed_at": now,
            "stored": 1,
            "ra_deg": h.ra_deg,
            "dec_deg": h.dec_deg,
            "obs_date": date,
            "obs_time": tod,
            "start_mjd": h.start_mjd,
            "end_mjd": h.end_mjd,
            "mid_mjd": h.mid_mjd,
            "freq_min_hz": h.freq_min_hz,
            "freq_max_hz": h.freq_max_hz,
            "channel_width_hz": h.channel_width_hz,
            "integration_time_s": h.integration_time_s,
            "n_freqs": h.n_freqs,
            "n_times": h.n_times,
            "n_ants": h.n_ants,
            "n_pols": h.n_pols,
            "n_blts": h.n_blts,
            "telescope_name": h.telescope_name,
            "storage_location_id": c.location_id,
            "mtime_ns": c.mtime_ns,
            "is_duplicate": dup,
        }
