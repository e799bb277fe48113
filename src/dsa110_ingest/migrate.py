"""``dsa110-ingest migrate``: move a legacy ``hdf5_file_index`` out of ``products.sqlite3``.

Order of work, each step safe to be killed (a rerun ends in the same state):
1. back up both databases (online backup API) next to them;
2. copy every legacy row into the HDF5 DB, regrouped with this project's rules, in ONE
   transaction (a kill before its commit leaves the HDF5 DB untouched; a rerun skips
   rows already copied);
3. verify that every legacy path is in the HDF5 DB (count and per path);
4. in one products-DB transaction: fill unknown ``ms_index.group_id`` and drop the
   legacy table (unless ``--keep-legacy``).
``--dry-run`` does steps 2-3 on a throw-away copy of the HDF5 DB and changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa110_ingest.config import Config, location_holding
from dsa110_ingest.db import IndexStore, open_index_at, open_products_at
from dsa110_ingest.db.records import MsRecord
from dsa110_ingest.errors import MigrationError, MisnamedFileError
from dsa110_ingest.ingest.grouping import join_group
from dsa110_ingest.migrate_backup import remove_partial_backups, write_backup
from dsa110_ingest.naming import NameParser
from dsa110_ingest.times import iso_to_unix, mjd_to_unix, unix_to_iso, unix_to_mjd

SCHEMA_2025_11_15 = (
    "path",
    "filename",
    "group_id",
    "subband_code",
    "timestamp_iso",
    "timestamp_mjd",
    "file_size_bytes",
    "modified_time",
    "indexed_at",
    "stored",
)
SCHEMA_2025_11_17 = (*SCHEMA_2025_11_15, "subband_num", "ra_deg", "dec_deg", "obs_date", "obs_time")
# columns copied as they are; the rest of a legacy row goes to legacy_extra (JSON)
COPIED = ("file_size_bytes", "modified_time", "indexed_at", "ra_deg", "dec_deg")
STAGES = ("backing-up", "backup", "insert", "commit", "drop")


@dataclass
class Report:
    legacy_rows: int = 0
    schema: str = ""
    extra_columns: list[str] = field(default_factory=list)
    already_present: int = 0
    inserted: int = 0
    missing_on_disk: int = 0
    unparsed: list[str] = field(default_factory=list)
    groups: int = 0
    complete: int = 0
    incomplete: int = 0
    conflicts: int = 0
    already_converted: int = 0
    queued: int = 0
    backups: list[str] = field(default_factory=list)
    partials_removed: list[Path] = field(default_factory=list)
    dropped: bool = False

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would" if dry_run else "did"
        return [
            f"legacy hdf5_file_index: {self.legacy_rows} rows, schema {self.schema}"
            + (
                f", extra columns kept as JSON: {', '.join(self.extra_columns)}"
                if self.extra_columns
                else ""
            ),
            f"{verb} copy {self.inserted} rows ({self.already_present} already in the HDF5 DB; "
            f"{self.missing_on_disk} files no longer on disk, kept with stored = 0)",
            f"groups: {self.groups} ({self.complete} complete, {self.incomplete} incomplete, "
            f"{self.conflicts} duplicate files recorded as conflicts)",
            f"already converted (ms_index): {self.already_converted} groups, never converted "
            f"again; {self.queued} complete groups queued for conversion",
            *(f"name not understood, copied without a group: {p}" for p in self.unparsed[:20]),
        ]


def _kill_if(stage: str, stop_after: str | None) -> None:
    """Fault injection for the tests: a real SIGKILL at a named point."""
    if stop_after == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def _legacy_schema(cols: list[str]) -> tuple[str, list[str]]:
    if "path" not in cols:
        raise MigrationError(
            "the legacy hdf5_file_index has no `path` column; nothing was "
            "changed. Inspect it with sqlite3 before migrating by hand"
        )
    extra = [c for c in cols if c not in SCHEMA_2025_11_17]
    if set(SCHEMA_2025_11_17) <= set(cols):
        name = "2025-11-17"
    elif set(SCHEMA_2025_11_15) <= set(cols):
        name = "2025-11-15"
    else:
        name = "partial (" + ", ".join(c for c in SCHEMA_2025_11_15 if c not in cols) + " missing)"
    return name, extra


def _name_time(row: dict[str, Any], parser: NameParser) -> tuple[float, int] | None:
    path = row["path"]
    name = row.get("filename") or os.path.basename(path)
    try:
        n = parser.parse(path, name)
        return n.timestamp_unix, n.subband_num
    except MisnamedFileError:
        pass
    sb = row.get("subband_num")
    if sb is None and isinstance(row.get("subband_code"), str):
        code = row["subband_code"].removeprefix("sb")
        sb = int(code) if code.isdigit() else None
    ts = None
    if row.get("timestamp_iso"):
        try:
            ts = iso_to_unix(str(row["timestamp_iso"]))
        except ValueError:
            ts = None
    if ts is None and row.get("timestamp_mjd") is not None:
        ts = mjd_to_unix(float(row["timestamp_mjd"]))
    return (ts, int(sb)) if ts is not None and sb is not None else None


def _location(cfg: Config, path: str, ids: dict[str, int]) -> int | None:
    held = location_holding(((loc.name, loc) for loc in cfg.storage_locations), path)
    return ids.get(held[0]) if held else None


def _copy_rows(
    cfg: Config,
    hdf5: IndexStore,
    legacy: list[dict[str, Any]],
    extra: list[str],
    ms_rows: list[MsRecord],
    rep: Report,
    queue: bool,
    stop_after: str | None,
) -> dict[str, str]:
    """Step 2, in one transaction. Returns {ms path: group id} for ms_index rows matched."""
    parser = NameParser(cfg.pattern, cfg.groups.expected_subbands)
    loc_ids = {r.name: r.id for r in hdf5.locations()}
    present = hdf5.all_paths()
    now = time.time()
    ordered = _in_name_order(legacy, parser)
    with hdf5.transaction("migrating legacy rows"):
        for i, (name_time, row) in enumerate(ordered):
            if i == len(ordered) // 2:
                _kill_if("insert", stop_after)
            if row["path"] in present:
                rep.already_present += 1
                continue
            file_row = _file_row(cfg, row, extra, loc_ids, rep)
            _insert_legacy_row(cfg, hdf5, file_row, row, name_time, rep, now)
        touched, legacy_gid = _legacy_groups(hdf5, legacy)
        matched = _match_converted(hdf5, ms_rows, touched, legacy_gid, cfg, rep, now)
        _settle_groups(cfg, hdf5, touched, set(matched.values()), queue, rep, now)
        hdf5.set_meta("legacy_migration", json.dumps({"at": now, "rows": rep.legacy_rows}))
    return matched


def _in_name_order(
    legacy: list[dict[str, Any]], parser: NameParser
) -> list[tuple[tuple[float, int] | None, dict[str, Any]]]:
    """Legacy rows with their (name time, subband), by time, subband and path: grouping
    sees an observation's files in the order the daemon would have; rows whose name is
    not understood come last."""

    def key(item: tuple[tuple[float, int] | None, dict[str, Any]]) -> tuple[float, int, str]:
        name_time, row = item
        return (*(name_time or (float("inf"), 0)), row["path"])

    return sorted(((_name_time(row, parser), row) for row in legacy), key=key)


def _file_row(
    cfg: Config, row: dict[str, Any], extra: list[str], loc_ids: dict[str, int], rep: Report
) -> dict[str, Any]:
    """A legacy row as a file-index row (without its group): the columns copied as they
    are, ``stored`` from the disk, the rest of the row kept as JSON in ``legacy_extra``."""
    path = row["path"]
    exists = os.path.exists(path)
    rep.missing_on_disk += not exists
    extra_json = {c: row[c] for c in extra if row.get(c) is not None}
    if row.get("group_id") is not None:
        extra_json["legacy_group_id"] = row["group_id"]
    out: dict[str, Any] = {c: row.get(c) for c in COPIED}
    out.update(
        path=path,
        filename=row.get("filename") or os.path.basename(path),
        stored=int(exists),
        storage_location_id=_location(cfg, path, loc_ids),
        legacy_extra=json.dumps(extra_json, sort_keys=True, default=str) if extra_json else None,
    )
    return out


def _insert_legacy_row(
    cfg: Config,
    hdf5: IndexStore,
    out: dict[str, Any],
    row: dict[str, Any],
    name_time: tuple[float, int] | None,
    rep: Report,
    now: float,
) -> None:
    """Insert the file row ``out`` of the legacy ``row``, placed in its group by this
    project's rules (a name not understood: copied without a group)."""
    if name_time is None:
        rep.unparsed.append(out["path"])
        hdf5.insert_file_if_new(out)
        rep.inserted += 1
        return
    ts, subband = name_time
    placed, conflict = join_group(hdf5, ts, subband, cfg.groups, now)
    iso = unix_to_iso(ts)
    date, _, tod = iso.partition("T")
    out.update(
        group_id=placed.group_id,
        subband_num=subband,
        subband_code=f"sb{subband:02d}",
        timestamp_iso=iso,
        timestamp_mjd=unix_to_mjd(ts),
        obs_date=row.get("obs_date") or date,
        obs_time=row.get("obs_time") or tod,
        is_duplicate=int(conflict),
    )
    hdf5.insert_file_if_new(out)
    rep.inserted += 1
    rep.conflicts += conflict
    # settled history: a legacy file gone since still counts in the observation it made
    hdf5.refresh_group(placed.group_id, placed.min_ts, placed.max_ts, now, history=True)


def _legacy_groups(
    hdf5: IndexStore, legacy: list[dict[str, Any]]
) -> tuple[dict[str, tuple[float, float]], dict[str, set[str]]]:
    """The groups of every legacy row, including rows an earlier (killed) run copied:
    ({group id: (min_ts, max_ts)}, {legacy group id: our group ids})."""
    of_path = hdf5.path_groups()
    legacy_gid: dict[str, set[str]] = {}
    for row in legacy:
        gid = of_path.get(row["path"])
        if gid is not None and row.get("group_id") is not None:
            legacy_gid.setdefault(str(row["group_id"]), set()).add(gid)
    touched: dict[str, tuple[float, float]] = {}
    for gid in {of_path.get(r["path"]) for r in legacy} - {None}:
        g = hdf5.group(gid)
        if g is not None:
            touched[gid] = (g.min_ts, g.max_ts)
    return touched, legacy_gid


def _settle_groups(
    cfg: Config,
    hdf5: IndexStore,
    touched: dict[str, tuple[float, float]],
    converted: set[str],
    queue: bool,
    rep: Report,
    now: float,
) -> None:
    """Old observations: settle their state now, without events (consumers saw them long
    ago) and without waiting for a timeout; queue the complete ones not yet converted."""
    rep.groups = len(touched)
    for gid in touched:
        g = hdf5.group(gid)
        if g is None or g.state != "collecting":
            continue
        if g.n_subbands >= g.expected_subbands:
            hdf5.set_group_state(gid, "complete", now)
            rep.complete += 1
            if queue and gid not in converted and cfg.convert.enabled:
                hdf5.enqueue_job(gid, unix_to_mjd(g.min_ts), now)
                rep.queued += 1
        else:
            hdf5.set_group_state(gid, "incomplete", now)
            rep.incomplete += 1


def _match_converted(
    hdf5: IndexStore,
    ms_rows: list[MsRecord],
    touched: dict[str, tuple[float, float]],
    legacy_gid: dict[str, set[str]],
    cfg: Config,
    rep: Report,
    now: float,
) -> dict[str, str]:
    """ms_index rows -> our groups: by legacy group_id, else by start (or mid) time."""
    tol = cfg.groups.cluster_tolerance_seconds
    spans = sorted((lo, hi, gid) for gid, (lo, hi) in touched.items())
    matched: dict[str, str] = {}
    for ms in ms_rows:
        gids = legacy_gid.get(str(ms.group_id)) if ms.group_id else None
        if not gids:
            t = ms.start_mjd if ms.start_mjd is not None else ms.mid_mjd
            if t is None:
                continue
            t = mjd_to_unix(t)
            # an MS starts with its group's first integration; a mid time lies within the
            # observation (one cadence after its first file)
            slack = tol if ms.start_mjd is not None else 330.0
            gids = {gid for lo, hi, gid in spans if lo - tol <= t <= hi + slack}
        for gid in gids:
            hdf5.record_converted(gid, ms.path, None, now)
            matched[ms.path] = gid
    rep.already_converted = len(set(matched.values()))
    return matched


def run_migration(
    cfg: Config,
    products_path: Path,
    hdf5_path: Path,
    *,
    dry_run: bool = False,
    keep_legacy: bool = False,
    queue: bool = True,
    stop_after: str | None = None,
) -> Report | None:
    """Returns None when there is nothing (left) to migrate."""
    if not products_path.exists():
        raise MigrationError(f"products DB {products_path} does not exist; pass --products-db")
    rep = Report()
    with open_products_at(products_path, readonly=True) as ro:
        if not ro.has_table("hdf5_file_index"):
            return None
        cols = ro.legacy_columns()
        rep.schema, rep.extra_columns = _legacy_schema(cols)
        legacy = ro.legacy_rows()
        ms_rows = ro.all_ms() if ro.has_table("ms_index") else []
    rep.legacy_rows = len(legacy)

    if dry_run:
        with tempfile.TemporaryDirectory() as d:
            scratch = Path(d) / "hdf5.sqlite3"
            if hdf5_path.exists():
                with open_index_at(hdf5_path, readonly=True) as src:
                    src.backup_to(scratch)
            with open_index_at(scratch) as hdf5:
                _register(cfg, hdf5)
                _copy_rows(cfg, hdf5, legacy, rep.extra_columns, ms_rows, rep, queue, None)
        return rep

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open_products_at(products_path) as products, open_index_at(hdf5_path) as hdf5:
        for db, path in ((products, products_path), (hdf5, hdf5_path)):
            rep.partials_removed += remove_partial_backups(path)
            dest = write_backup(db, path, stamp, lambda: _kill_if("backing-up", stop_after))
            rep.backups.append(str(dest))
        _kill_if("backup", stop_after)
        _register(cfg, hdf5)
        matched = _copy_rows(cfg, hdf5, legacy, rep.extra_columns, ms_rows, rep, queue, stop_after)
        _kill_if("commit", stop_after)
        have = hdf5.all_paths()
        lost = [r["path"] for r in legacy if r["path"] not in have]
        if lost:
            raise MigrationError(
                f"{len(lost)} legacy rows are not in {hdf5_path} after the copy "
                f"(e.g. {lost[0]}); the legacy table was NOT dropped. Restore "
                "from the backups and report this"
            )
        products.finish_migration(matched, drop_legacy=not keep_legacy)
        rep.dropped = not keep_legacy
        _kill_if("drop", stop_after)
    return rep


def _register(cfg: Config, hdf5: IndexStore) -> None:
    for loc in cfg.storage_locations:
        hdf5.ensure_location(loc.name, str(loc.path), loc.role, loc.description, node=cfg.node)
