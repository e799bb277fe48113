"""Conflicts: two files that claim one subband of a group.

Either the same subband name twice (a node wrote it again under another timestamp), or
two members whose frequencies overlap (one subband's data under another's name). A file
in conflict stays indexed but leaves the subband count, so a group never completes or
converts with the same subband twice; each conflict is a ``group.conflict`` event.
"""

from __future__ import annotations

import structlog

from dsa110_ingest import events as ev
from dsa110_ingest.db import IndexStore
from dsa110_ingest.db.records import FileRecord
from dsa110_ingest.ingest.grouping import Band, overlaps, suspect
from dsa110_ingest.naming import subband_code

log = structlog.get_logger("dsa110_ingest.indexer")

Event = tuple[str, str]  # (type, group_id)


def band_of(f: FileRecord) -> Band:
    """The frequencies of an indexed file row."""
    return Band(f.path, f.subband_num, f.freq_min_hz, f.freq_max_hz)


def record_name_conflict(db: IndexStore, gid: str, path: str, subband: int, now: float) -> Event:
    """A second file named for a subband the group already has: the first one is kept."""
    kept = [f.path for f in db.group_files(gid) if f.subband_num == subband]
    code = subband_code(subband)
    db.add_event(ev.GROUP_CONFLICT, gid, {"path": path, "subband": code, "kept": kept}, now)
    log.warning("file.conflict", path=path, group_id=gid, subband=code)
    return (ev.GROUP_CONFLICT, gid)


def check_frequencies(db: IndexStore, new: Band, gid: str, now: float) -> list[Event]:
    """Two members of a group with overlapping frequencies are a conflict: the suspect
    leaves the subband count, so the group cannot complete or convert with the same
    frequencies twice."""
    # a member gone from disk holds no frequencies any more (its successor is judged)
    members = [
        band_of(f)
        for f in db.group_files(gid)
        if f.path != new.path and f.freq_min_hz is not None and not f.missing
    ]
    out: list[Event] = []
    for old in members:
        if not overlaps(new, old):
            continue
        bad, sure = suspect(new, old, [m for m in members if m.path != old.path])
        db.set_conflict(bad.path, True)
        out.append(_record_overlap(db, gid, (old, new), bad, sure, now))
        if bad is new:
            break
    return out


def revise_frequency_verdicts(db: IndexStore, gid: str, now: float) -> list[Event]:
    """A verdict made before the band plan was known (the later arrival was taken as
    the suspect) is revised once the other files show which one is off its band: in
    any arrival order the impostor ends up out, the genuine file in."""
    files = db.group_files(gid, members_only=False)
    known = [f for f in files if f.freq_min_hz is not None and not f.missing]
    members = [band_of(f) for f in known if not f.conflict]
    held = {m.subband for m in members}
    excluded = [band_of(f) for f in known if f.conflict and f.subband_num not in held]
    out: list[Event] = []
    for x in excluded:
        for y in members:
            if not overlaps(x, y):
                continue
            bad, sure = suspect(x, y, [m for m in members if m.path != y.path])
            if not (sure and bad is y):
                continue
            db.set_conflict(y.path, True)
            db.set_conflict(x.path, False)
            members = [x if m is y else m for m in members]
            out.append(_record_overlap(db, gid, (x, y), y, True, now, revised=True))
            break
    return out


def _record_overlap(
    db: IndexStore,
    gid: str,
    pair: tuple[Band, Band],
    bad: Band,
    sure: bool,
    now: float,
    *,
    revised: bool = False,
) -> Event:
    """The ``group.conflict`` event of two overlapping members, naming the suspect."""
    a, b = pair
    payload: dict[str, object] = {
        "reason": "overlapping_frequencies",
        "paths": [a.path, b.path],
        "path": bad.path,
        "subband": subband_code(bad.subband),
        "suspect_by_band_plan": sure,
    }
    if revised:
        payload |= {"revised": True, "fix": "remove or replace the suspect file"}
    else:
        payload |= {
            "freq_hz": {a.path: [a.fmin, a.fmax], b.path: [b.fmin, b.fmax]},
            "fix": "remove or replace the suspect file; the group completes once every "
            "subband has a file with its own frequencies",
        }
    db.add_event(ev.GROUP_CONFLICT, gid, payload, now)
    log.warning(
        "file.frequency_conflict",
        group_id=gid,
        paths=[a.path, b.path],
        suspect=bad.path,
        suspect_by_band_plan=sure,
        **({"revised": True} if revised else {}),
    )
    return (ev.GROUP_CONFLICT, gid)
