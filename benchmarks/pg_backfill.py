"""The PostgreSQL backend against SQLite: backfill throughput and the one-hour window query.

    python benchmarks/pg_backfill.py [--files 1024] [--rows 1000000] [--rounds 2]

(a) a backfill (``index_hdf5_files`` of a folder: scan, header reads, clustering, events)
into a fresh SQLite index and into a fresh PostgreSQL index, the same files, page cache
warm, alternating rounds in one process; the target is PostgreSQL >= 0.8x SQLite.
(b) ``find_subband_groups_from_db`` for one-hour windows on a 1,000,000-row PostgreSQL
index; the target is < 10 ms. The server is a real one started here (tests/pg_server.py),
durable as in production: fsync and synchronous_commit on, as SQLite's synchronous=FULL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.pg_server: the server
from tests.pg_server import PgServer, find_bindir, start_server

from _report import machine, verdict, write_section
from dsa110_ingest import find_subband_groups_from_db, index_hdf5_files
from dsa110_ingest.config import load_config
from dsa110_ingest.db import open_index_at
from dsa110_ingest.times import unix_to_iso
from dsa110_ingest.tools.simulate import SimParams, simulate

T0 = 1759363200.0
CADENCE = 309.0  # seconds between observations


def backfill(folder: Path, target: str | Path, cfg_path: Path, home: str) -> float:
    cfg = load_config(cfg_path, env={"HOME": home})
    t0 = time.perf_counter()
    r = index_hdf5_files(folder, target, config=cfg)
    dt = time.perf_counter() - t0
    assert r.rejected == 0, r
    return dt


def check(target: str | Path, n_files: int, n_groups: int) -> None:
    with open_index_at(target, readonly=True) as db:
        assert len(db.all_paths()) == n_files
        assert db.count_events("group.complete") == n_groups


def big_pg(server: PgServer, rows: int) -> str:
    """Synthetic rows as a year and more of production would leave (16 files a group),
    loaded with COPY; the same rows as index_throughput.py's SQLite one."""
    uri = server.uri(server.create_database("big"))
    db = open_index_at(uri)
    loc = db.ensure_location("incoming", "/data/incoming", "incoming")
    c = db.dbapi_connection()
    groups = rows // 16
    with c.transaction(), c.cursor() as cur:
        with cur.copy(
            "COPY groups (group_id, state, n_subbands, expected_subbands, n_conflicts, min_ts, "
            "max_ts, start_mjd, end_mjd, first_seen_at, last_seen_at, deadline_at) FROM STDIN"
        ) as cp:
            for g in range(groups):
                t = T0 + g * CADENCE
                mjd = (t / 86400 + 40587, (t + CADENCE) / 86400 + 40587)
                cp.write_row((unix_to_iso(t), "complete", 16, 16, 0, t, t + 2, *mjd, 0, 0, 0))
        with cur.copy(
            "COPY hdf5_file_index (path, filename, group_id, subband_num, subband_code, "
            "timestamp_mjd, stored, storage_location_id, start_mjd, end_mjd) FROM STDIN"
        ) as cp:
            for g in range(groups):
                t = T0 + g * CADENCE
                gid = unix_to_iso(t)
                for sb in range(16):
                    name = f"{gid}_sb{sb:02d}.hdf5"
                    start, end = t / 86400 + 40587, (t + CADENCE) / 86400 + 40587
                    path = f"/data/incoming/{name}"
                    cp.write_row((path, name, gid, sb, f"sb{sb:02d}", start, 1, loc, start, end))
        cur.execute("INSERT INTO meta VALUES ('max_group_span_mjd', %s)", (repr(CADENCE / 86400),))
    c.execute("VACUUM ANALYZE groups")
    c.execute("VACUUM ANALYZE hdf5_file_index")
    db.close()
    return uri


def window_queries(uri: str, uri_rows: int) -> tuple[list[float], list[float]]:
    """(the API call, opening the store each time as it does; the query alone on an open
    store) in seconds, 30 one-hour windows each."""
    start = T0 + 200 * 86400 if uri_rows >= 1_000_000 else T0 + 86400
    api, query = [], []
    with open_index_at(uri, readonly=True) as db:
        for i in range(30):
            s = start + i * 3600
            lo, hi = s / 86400 + 40587, (s + 3600) / 86400 + 40587
            q0 = time.perf_counter()
            res = find_subband_groups_from_db(uri, lo, hi)
            api.append(time.perf_counter() - q0)
            assert 11 <= len(res) <= 13 and all(len(g.files) == 16 for g in res)
            q0 = time.perf_counter()
            rows = db.groups_overlapping(lo, hi)
            files = db.files_of_groups([r.group_id for r in rows])
            query.append(time.perf_counter() - q0)
            assert len(rows) == len(res) and all(len(files[r.group_id]) == 16 for r in rows)
    return api, query


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if find_bindir() is None:
        print("pg_backfill: no PostgreSQL binaries (initdb, pg_ctl, postgres); skipped")
        return 0
    load_before = os.getloadavg()[0]
    server = start_server(durable=True)
    try:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            inc = root / "incoming"
            n_groups = args.files // 16
            print(f"writing {n_groups * 16} simulated files ...", file=sys.stderr)
            simulate(
                inc,
                n_groups,
                "2025-10-02T00:00:00",
                2.0,
                params=SimParams(nants=16, nchan=48, ntimes=24),
            )
            n = n_groups * 16
            cfg_path = root / "c.toml"
            cfg_path.write_text('state_dir = "state"\nlog_level = "warning"\n')
            # warm the page cache and the code paths once, unmeasured
            backfill(inc, root / "warm.sqlite3", cfg_path, d)
            t_sqlite, t_pg = [], []
            for k in range(args.rounds):
                target = root / f"h{k}.sqlite3"
                t_sqlite.append(backfill(inc, target, cfg_path, d))
                check(target, n, n_groups)
                uri = server.uri(server.create_database("backfill"))
                t_pg.append(backfill(inc, uri, cfg_path, d))
                check(uri, n, n_groups)
                print(
                    f"round {k}: sqlite {n / t_sqlite[-1]:,.0f} files/s, "
                    f"postgresql {n / t_pg[-1]:,.0f} files/s",
                    file=sys.stderr,
                )
        print(f"building a {args.rows:,}-row PostgreSQL index ...", file=sys.stderr)
        big = big_pg(server, args.rows)
        api, query = window_queries(big, args.rows)
    finally:
        server.stop()

    load_after = os.getloadavg()[0]
    fs, fp = n / min(t_sqlite), n / min(t_pg)
    ratio = fp / fs
    a_med, a_max = statistics.median(api) * 1e3, max(api) * 1e3
    q_med, q_max = statistics.median(query) * 1e3, max(query) * 1e3
    ok = {"ratio": ratio >= 0.8, "q": q_med < 10}
    body = f"""## PostgreSQL backend (`benchmarks/pg_backfill.py`)

Backfill (`index_hdf5_files` of one folder: scan, header reads, clustering, events) of
{n} simulated files ({n_groups} groups; 16 antennas, 48 channels, 24 integrations each)
into a fresh index on each backend, page cache warm, best of {args.rounds} alternating
rounds; PostgreSQL {server.version} on a local unix socket, fsync and synchronous_commit
on (durable, as SQLite's `synchronous = FULL`); {machine()}; 1-minute load average
{load_before:.1f} at the start, {load_after:.1f} at the end (other work on the machine: the
absolute rates move with it, the ratio less so).

| backend | files/s | ratio |
|---|---:|---:|
| SQLite | {fs:,.0f} | 1.00x |
| PostgreSQL | {fp:,.0f} | {ratio:.2f}x |

One-hour windows on a {args.rows:,}-row PostgreSQL index (30 windows):
`find_subband_groups_from_db` (opens a read-only store each call: connection and schema
check included) median {a_med:.2f} ms, max {a_max:.2f} ms; the query alone on an open
store (`groups_overlapping` + `files_of_groups`) median {q_med:.2f} ms, max {q_max:.2f} ms.

| target | result |
|---|---|
| backfill on PostgreSQL >= 0.8x SQLite | {ratio:.2f}x: {verdict(ok["ratio"])} |
| one-hour window on 1M rows < 10 ms | {q_med:.2f} ms median: {verdict(ok["q"])} |
"""
    write_section("pg_backfill", body)
    print(body)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
