"""Where an admitted file goes: a new member of its group (created, merged or renamed
as clustering says), a known file rewritten or back on disk, or a known file moved."""

from __future__ import annotations

import os

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.config import Config
from dsa110_ingest.db import IndexStore
from dsa110_ingest.db.records import FileRecord, Group
from dsa110_ingest.ingest.batch import BatchResult
from dsa110_ingest.ingest.conflicts import (
    band_of,
    check_frequencies,
    record_name_conflict,
    revise_frequency_verdicts,
)
from dsa110_ingest.ingest.file_row import file_row
from dsa110_ingest.ingest.grouping import Band, join_group
from dsa110_ingest.ingest.lifecycle import COMPLETABLE, Expiry, complete_group, is_complete
from dsa110_ingest.ingest.scanner import Candidate
from dsa110_ingest.naming import subband_code
from dsa110_ingest.uvh5 import HeaderInfo

log = structlog.get_logger("dsa110_ingest.indexer")


def _content_changed(row: FileRecord, cand: Candidate, header: HeaderInfo) -> bool:
    """Other data under the same name (not the same bytes rewritten or touched): its
    size or the header fields that place it in time and frequency differ."""
    return (row.file_size_bytes, row.start_mjd, row.end_mjd, row.freq_min_hz, row.n_blts) != (
        cand.size,
        header.start_mjd,
        header.end_mjd,
        header.freq_min_hz,
        header.n_blts,
    )


class Placer:
    """Places admitted files inside the indexer's transaction."""

    def __init__(self, db: IndexStore, cfg: Config, expiry: Expiry, *, convert: bool) -> None:
        self.db = db
        self.cfg = cfg
        self.expiry = expiry
        self.convert = convert

    def place(self, cand: Candidate, header: HeaderInfo, now: float, result: BatchResult) -> None:
        same_name = self.db.files_named(cand.filename)
        existing = next((f for f in same_name if f.path == cand.path), None)
        if existing is not None and existing.group_id is not None:
            self._reindex(cand, header, existing, now, result)
        elif not self._adopt_move(cand, now, result):
            self._join(cand, header, now, result)

    def _reindex(
        self,
        cand: Candidate,
        header: HeaderInfo,
        existing: FileRecord,
        now: float,
        result: BatchResult,
    ) -> None:
        """Rewritten in place, or back after a disappearance: same name, same group."""
        assert cand.name is not None
        gid = existing.group_id
        group = self.db.group(gid)
        # a file once out of the count (a conflict) and now rewritten, with its slot still
        # free, is judged again: the replacement may be the real one
        judge_again = bool(
            existing.conflict
            and group is not None
            and group.state in COMPLETABLE
            and not self.db.subband_taken(gid, cand.name.subband_num)
        )
        # a member back after a disappearance whose subband another file took meanwhile
        # (vacate's heir) returns as the conflict: a subband never has two members
        displaced = bool(
            existing.missing
            and not existing.conflict
            and self.db.subband_taken(gid, cand.name.subband_num)
        )
        conflict = (existing.conflict and not judge_again) or displaced
        if not conflict and _content_changed(existing, cand, header):
            self._changed_member(gid, existing, now, result)
        self.db.upsert_file(file_row(cand, header, gid, conflict, now))
        self.db.unreject(cand.path)
        result.updated += 1
        if displaced:
            sb = cand.name.subband_num
            result.events.append(record_name_conflict(self.db, gid, cand.path, sb, now))
        if judge_again:
            result.events += check_frequencies(self.db, self._band(cand, header), gid, now)
        if judge_again or (existing.missing and not displaced):
            self._recount(gid, cand.path, now, result)

    def _changed_member(
        self,
        gid: str,
        existing: FileRecord,
        now: float,
        result: BatchResult,
        replaces: str | None = None,
    ) -> None:
        """A member of a group being or already converted now holds other data (or is
        another file, the heir of ``replaces``): its MS was (or is being) built from the
        old content. Not reconverted by itself (the new content may be the wrong one):
        the job is flagged, an event and a warning say it."""
        job = self.db.job(gid)
        if job is None or job.state not in ("running", "converted"):
            return  # not converted yet: the conversion will read what is on disk then
        code = existing.subband_code or "?"
        old = "the old file" if replaces is None else replaces
        fix = (
            f"check the file; if its new content is right, `dsa110-ingest convert --force "
            f"{gid}` rebuilds the MS from the files now on disk, else put {old} back"
        )
        what = "changed on disk" if replaces is None else f"took the place of {replaces}"
        note = f"stale: {code} ({existing.path}) {what} after conversion; {fix}"
        self.db.flag_job(gid, note, now)
        payload = {
            "reason": "member_changed",
            "path": existing.path,
            "subband": code,
            "conversion": job.state,
            "fix": fix,
            **({"replaces": replaces} if replaces else {}),
        }
        self.db.add_event(ev.GROUP_CONFLICT, gid, payload, now)
        result.events.append((ev.GROUP_CONFLICT, gid))
        log.warning(
            "file.changed_after_conversion",
            path=existing.path,
            group_id=gid,
            subband=code,
            conversion=job.state,
            replaces=replaces,
            fix=fix,
        )

    def _adopt_move(self, cand: Candidate, now: float, result: BatchResult) -> bool:
        """A known file under a new path (moved, or an older spelling of the same path)
        keeps its row and group; True when ``cand`` was one."""
        for twin in self.db.files_named(cand.filename):
            if (
                twin.path != cand.path
                and twin.file_size_bytes == cand.size
                and (
                    twin.missing
                    or not os.path.exists(twin.path)
                    # the same file under an older spelling (`..`, a symlinked folder)
                    or os.path.realpath(twin.path) == os.path.realpath(cand.path)
                )
            ):
                self.db.move_file(
                    twin.path,
                    cand.path,
                    cand.location_id,
                    cand.size,
                    cand.mtime_ns / 1e9,
                    cand.mtime_ns,
                )
                log.info("file.moved", src=twin.path, dst=cand.path, group_id=twin.group_id)
                result.moved += 1
                if twin.missing:
                    self._recount(twin.group_id, cand.path, now, result)
                return True
        return False

    def _join(self, cand: Candidate, header: HeaderInfo, now: float, result: BatchResult) -> None:
        """A new file: into its group (created, merged or renamed as clustering says)."""
        assert cand.name is not None
        placement, conflict = join_group(
            self.db, cand.name.timestamp_unix, cand.name.subband_num, self.cfg.groups, now
        )
        gid = placement.group_id
        if placement.target is None:
            self.expiry.born(gid)
        self.db.upsert_file(file_row(cand, header, gid, conflict, now))
        self.db.unreject(cand.path)
        result.indexed += 1
        if not conflict:
            result.events += check_frequencies(self.db, self._band(cand, header), gid, now)
        result.events += revise_frequency_verdicts(self.db, gid, now)
        group = self.db.refresh_group(gid, placement.min_ts, placement.max_ts, now)
        if conflict:
            result.events.append(
                record_name_conflict(self.db, gid, cand.path, cand.name.subband_num, now)
            )
        if is_complete(group):
            self._complete(group, now, result)
            result.completed_by[gid] = cand.path

    def vacate(self, paths: list[str], now: float, result: BatchResult) -> int:
        """Files gone from disk leave their groups' counts; where a member left, a file
        on disk that was a conflict for that subband takes its place (the operator
        removed the wrong one of two). Returns how many rows turned missing."""
        left = [
            (row.group_id, row.subband_num, row.path)
            for p in paths
            if (row := self.db.get_file(p)) is not None
            and row.group_id is not None
            and row.subband_num is not None
            and not row.missing
            and not row.conflict
        ]
        n = self.db.mark_missing(paths)
        for gid, sb, gone in left:
            self._fill_slot(gid, sb, gone, now, result)
        return n

    def _fill_slot(self, gid: str, sb: int, gone: str, now: float, result: BatchResult) -> None:
        """The conflict of longest standing still on disk becomes the member of ``sb``,
        judged like any arrival (frequencies, then completion, each at most once)."""
        if self.db.subband_taken(gid, sb):
            return
        spare = [
            f
            for f in self.db.group_files(gid, members_only=False)
            if f.conflict and not f.missing and f.subband_num == sb and os.path.exists(f.path)
        ]
        if not spare:
            return
        heir = min(spare, key=lambda f: (f.indexed_at or 0.0, f.path))
        self.db.set_conflict(heir.path, False)
        log.info(
            "file.took_slot",
            path=heir.path,
            group_id=gid,
            subband=subband_code(sb),
            replaces=gone,
            why="the member of this subband left the disk; this file claimed the same subband",
        )
        # the group's MS, if built, holds the file that left (D5 for the heir)
        self._changed_member(gid, heir, now, result, replaces=gone)
        if heir.freq_min_hz is not None:
            result.events += check_frequencies(self.db, band_of(heir), gid, now)
        self._recount(gid, heir.path, now, result)

    def _recount(self, gid: str, path: str, now: float, result: BatchResult) -> None:
        """A member back in its group's count (on disk again, or no longer a conflict)
        may be the last one the group waited for."""
        group = self.db.group(gid)
        if group is not None:
            group = self.db.refresh_group(gid, group.min_ts, group.max_ts, now)
            if is_complete(group):
                self._complete(group, now, result)
                result.completed_by[gid] = path

    def _complete(self, group: Group, now: float, result: BatchResult) -> None:
        result.events.append(complete_group(self.db, group, now, self.convert))

    @staticmethod
    def _band(cand: Candidate, header: HeaderInfo) -> Band:
        assert cand.name is not None
        return Band(cand.path, cand.name.subband_num, header.freq_min_hz, header.freq_max_hz)
