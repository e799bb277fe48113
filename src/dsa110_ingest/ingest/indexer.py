"""Indexing: candidates in, file rows, group changes and events out, in transactions.

This is the one code path for every way a file is found: the live watcher, the
periodic reconcile, ``run --rescan`` and ``index-hdf5`` all end in :meth:`Indexer.process`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from dsa110_ingest.config import Config, StorageLocation, is_under, location_holding
from dsa110_ingest.db import IndexStore
from dsa110_ingest.db.records import KnownFile
from dsa110_ingest.db.retry import busy_retry
from dsa110_ingest.ingest.batch import BatchResult
from dsa110_ingest.ingest.lifecycle import Clock, Expiry
from dsa110_ingest.ingest.placement import Placer
from dsa110_ingest.ingest.reader import HeaderReader, ReadFailure
from dsa110_ingest.ingest.scanner import Candidate, scan_tree, stat_path
from dsa110_ingest.naming import NameParser, path_text
from dsa110_ingest.times import mjd_to_unix
from dsa110_ingest.uvh5 import HeaderInfo

log = structlog.get_logger("dsa110_ingest.indexer")

# what the reader gave for a candidate: None for one never read (misnamed, escaping link)
Read = HeaderInfo | ReadFailure | None


__all__ = ["BatchResult", "Indexer"]


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
        self.expiry = Expiry(db, cfg, clock=clock, mono=mono)
        self.parser = NameParser(cfg.pattern, cfg.groups.expected_subbands)
        self.reader = reader or HeaderReader(
            cfg.read.hdf5_locking, cfg.read.workers, deadline_s=cfg.read.deadline_seconds
        )
        self.locations: list[tuple[int, StorageLocation]] = []
        self.roots: tuple[str, ...] = ()
        self.placer = Placer(db, cfg, self.expiry, convert=cfg.convert.enabled)

    @property
    def convert_enabled(self) -> bool:
        """Whether a completed group also gets its conversion job."""
        return self.placer.convert

    @convert_enabled.setter
    def convert_enabled(self, on: bool) -> None:
        self.placer.convert = on

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
            home = next((i for i, r in outer if is_under(real, r)), None)
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
        return location_holding(self.locations, path)

    def close(self) -> None:
        self.reader.close()

    # -- entry points -------------------------------------------------------------
    def index_paths(self, paths: Iterable[str]) -> BatchResult:
        """Files named by watcher events: stat them and index what is new or changed."""
        cands: list[Candidate] = []
        for path in dict.fromkeys(self.normalise(p) for p in paths):
            held = self.location_of(path)
            if held is None:
                continue
            cand = stat_path(path, held[0], self.parser, self.roots)
            if cand is not None and not self._unchanged(cand):
                cands.append(cand)
        # a transaction a file: each row commits once read, not after the whole batch's reads
        return self.process(cands, batch_size=1)

    def reconcile(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        obs_expiry: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Compare every location with the DB and take whatever events missed.

        ``stop`` is asked between batches: once true, the reconcile ends there
        (``stopped``), every batch done so far committed; the next one resumes (what is
        indexed is unchanged on disk, so it is skipped). No group expires after a stopped
        pass: its files were not all seen."""
        total = BatchResult()
        rejected = self.db.known_rejected()
        for lid, loc in self.locations:
            if total.stopped:
                break
            if not loc.path.is_dir():
                total.missing_locations.append(f"{loc.name} ({loc.path})")
                log.error(
                    "location.missing",
                    location=loc.name,
                    path=str(loc.path),
                    hint="mount or create it; its files are not marked missing meanwhile",
                )
                continue
            total.add(self._reconcile_location(lid, loc, rejected, on_progress, stop))
        if not total.stopped:
            total.events += self.expire_groups(full_rescan=obs_expiry)
        return total

    def _reconcile_location(
        self,
        lid: int,
        loc: StorageLocation,
        rejected: dict[str, KnownFile],
        on_progress: Callable[[int, int], None] | None,
        stop: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Index what is new or changed in one location; mark what left it missing."""
        result = BatchResult()
        known = self.db.known_files(lid)
        todo: list[Candidate] = []
        seen: set[str] = set()
        for cand in scan_tree(loc.path, loc.recursive, lid, self.parser, self.roots):
            seen.add(cand.path)
            key = path_text(cand.path)  # how a name that is not UTF-8 is stored
            before = known.get(cand.path) or rejected.get(key)
            if (
                before is not None
                and before.size == cand.size
                and before.mtime_ns == cand.mtime_ns
                and (not before.missing or key in rejected)
            ):
                result.unchanged += 1
                continue
            todo.append(cand)
        result.add(self.process(todo, on_progress=on_progress, stop=stop))
        missing = [p for p, f in known.items() if not f.missing and p not in seen]
        if missing and loc.path.is_dir():
            result.add(self.mark_missing(missing))
        elif missing:
            log.warning(
                "location.unavailable",
                location=loc.name,
                path=str(loc.path),
                hint="files not marked missing while the location is absent; check the mount",
            )
        return result

    def mark_missing(self, paths: Sequence[str]) -> BatchResult:
        """Files gone from disk; a conflicting file on disk takes a slot a member left."""
        paths = [p for p in paths if not os.path.exists(p)]
        if not paths:
            return BatchResult()

        @busy_retry()
        def write() -> BatchResult:
            result = BatchResult()
            with self.db.transaction("marking deleted files"):
                result.missing = self.placer.vacate(paths, self.clock(), result)
            return result

        result = write()
        if result.missing:
            log.info("files.missing", count=result.missing, example=paths[0])
        for etype, gid in result.events:
            log.info(etype, group_id=gid)
        return result

    # -- the core -------------------------------------------------------------------
    def _unchanged(self, cand: Candidate) -> bool:
        row = self.db.get_file(cand.path)
        return bool(
            row
            and not row.missing
            and row.file_size_bytes == cand.size
            and row.mtime_ns == cand.mtime_ns
        )

    def process(
        self,
        cands: Sequence[Candidate],
        on_progress: Callable[[int, int], None] | None = None,
        batch_size: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Index candidates oldest observation first, ``batch_size`` files a transaction
        (the configured ``read.batch_size`` unless given); ``stop`` is asked after each."""
        result = BatchResult()
        cands = sorted(cands, key=lambda c: c.sort_key)
        readable = [c for c in cands if c.readable]
        reads = self.reader.read_many([c.path for c in readable])
        headers = iter(zip(readable, reads, strict=True))
        size = max(1, batch_size or self.cfg.read.batch_size)
        done = 0
        pending: list[tuple[Candidate, Read]] = []
        try:
            for cand in cands:
                pending.append((cand, next(headers)[1] if cand.readable else None))
                if len(pending) >= size:
                    result.add(self._apply_batch(pending))
                    done += len(pending)
                    pending = []
                    if on_progress:
                        on_progress(done, len(cands))
                    if stop is not None and done < len(cands) and stop():
                        result.stopped = True
                        log.info("reconcile.stopped", done=done, total=len(cands))
                        return result
        finally:
            # a generator: closing it settles reads in flight, not left for the next call
            getattr(reads, "close", lambda: None)()
        if pending:
            result.add(self._apply_batch(pending))
            if on_progress:
                on_progress(len(cands), len(cands))
        return result

    @busy_retry()
    def _apply_batch(self, items: list[tuple[Candidate, Read]]) -> BatchResult:
        result = BatchResult()
        now = self.clock()
        with self.db.transaction(f"indexing {len(items)} file(s)"):
            for cand, header in items:
                self._apply_one(cand, header, now, result)
        for path, msg in result.rejections:
            log.warning("file.rejected", path=path_text(path), reason=msg)
        # committed: each event's line now, not at the end of a long reconcile
        for etype, gid in result.events:
            log.info(etype, group_id=gid)
        return result

    def _reject(
        self, cand: Candidate, reason: str, message: str, now: float, result: BatchResult
    ) -> None:
        self.db.reject(cand.path, reason, message, cand.size, cand.mtime_ns, cand.location_id, now)
        result.rejected += 1
        result.rejections.append((path_text(cand.path), message))

    def _apply_one(self, cand: Candidate, read: Read, now: float, result: BatchResult) -> None:
        header = self._admit(cand, read, now, result)
        if header is None:
            return
        self.placer.place(cand, header, now, result)

    def _admit(
        self, cand: Candidate, read: Read, now: float, result: BatchResult
    ) -> HeaderInfo | None:
        """The header of a file fit to index; None when it is rejected, deferred or gone."""
        if cand.not_a_file is not None:
            message = (
                f"{cand.not_a_file} named like a subband file; never opened nor followed: "
                "remove or rename it, and put the real file (a regular file) there"
            )
            self._reject(cand, "not_a_file", message, now, result)
            # a member replaced by one (a FIFO moved over it, a link whose target went):
            # its data is gone, so it leaves its group as a deleted file would
            row = self.db.get_file(cand.path)
            if row is not None and not row.missing:
                result.missing += self.placer.vacate([cand.path], now, result)
            return None
        if cand.symlink_escape:
            message = (
                "symlink points outside every storage location; "
                "not followed (copy the file in instead)"
            )
            self._reject(cand, "symlink_outside", message, now, result)
            return None
        if cand.name_error is not None or cand.name is None:
            err = cand.name_error
            message = f"{err.detail} ({err.fix})" if err else "misnamed"
            self._reject(cand, "misnamed", message, now, result)
            return None
        if isinstance(read, ReadFailure):
            if read.retryable:
                result.deferred.append(cand.path)
            elif read.reason == "vanished":
                result.missing += self.placer.vacate([cand.path], now, result)
            else:
                self._reject(cand, read.reason, read.message, now, result)
            return None
        assert read is not None
        limit = self.cfg.groups.max_header_skew_seconds
        skew = abs(cand.name.timestamp_unix - mjd_to_unix(read.start_mjd))
        if skew > limit + read.integration_time_s:
            message = (
                f"timestamp in the name is {skew:.0f} s from the header's first integration "
                f"(limit {limit:.0f} s); the file is misnamed or its header is wrong"
            )
            self._reject(cand, "time_mismatch", message, now, result)
            return None
        return read

    def expire_groups(self, full_rescan: bool = False) -> list[tuple[str, str]]:
        """Emit ``group.incomplete`` for collecting groups past their deadline (see
        :meth:`Expiry.expire`)."""
        return self.expiry.expire(full_rescan=full_rescan, convert=self.convert_enabled)
