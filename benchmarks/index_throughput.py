"""Indexing throughput: `run --rescan` against a bare h5py loop and pyuvdata, same files.

    python benchmarks/index_throughput.py [--files 4096] [--rows 1000000]

(a) this project's fresh rescan; (b) the same rescan with nothing changed; (c) a bare
single-threaded h5py loop reading the same header fields, no database (one core's limit);
(d) pyuvdata ``UVData.read(read_data=False)`` per file. Then a 1,000,000-row HDF5 DB
answering ``find_subband_groups_from_db`` for a one-hour window.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, verdict, write_section
from dsa110_ingest import find_subband_groups_from_db
from dsa110_ingest.config import load_config
from dsa110_ingest.db import open_index_at
from dsa110_ingest.service import Service
from dsa110_ingest.times import unix_to_iso
from dsa110_ingest.tools.simulate import SimParams, simulate

FIELDS = (
    "Nants_data",
    "Nbls",
    "Nblts",
    "Nfreqs",
    "Npols",
    "Nspws",
    "Ntimes",
    "time_array",
    "freq_array",
    "channel_width",
    "integration_time",
    "telescope_name",
    "latitude",
    "longitude",
    "altitude",
    "polarization_array",
)


def bare_h5py(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with h5py.File(p, "r") as f:
            h = f["Header"]
            for k in FIELDS:
                h[k][()]
            ek = h["extra_keywords"]
            ek["phase_center_dec"][()]
            ek["ha_phase_center"][()]
    return time.perf_counter() - t0


def pyuvdata_loop(paths: list[str]) -> float:
    from pyuvdata import UVData

    UVData().read(paths[0], file_type="uvh5", read_data=False)  # one-time numba warm-up
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            UVData().read(p, file_type="uvh5", read_data=False)
    return time.perf_counter() - t0


def big_db(path: Path, rows: int) -> None:
    """Synthetic rows, as a year and more of production would leave (16 files a group)."""
    db = open_index_at(path)
    db.ensure_location("incoming", "/data/incoming", "incoming")
    c = db.dbapi_connection()
    t0 = 1759363200.0
    c.execute("BEGIN")
    groups = rows // 16
    c.executemany(
        "INSERT INTO groups (group_id, state, n_subbands, expected_subbands, n_conflicts, "
        "min_ts, max_ts, start_mjd, end_mjd, first_seen_at, last_seen_at, deadline_at) "
        "VALUES (?, 'complete', 16, 16, 0, ?, ?, ?, ?, 0, 0, 0)",
        (
            (
                unix_to_iso(t0 + g * 309),
                t0 + g * 309,
                t0 + g * 309 + 2,
                (t0 + g * 309) / 86400 + 40587,
                (t0 + g * 309 + 309) / 86400 + 40587,
            )
            for g in range(groups)
        ),
    )
    c.executemany(
        "INSERT INTO hdf5_file_index (path, filename, group_id, subband_num, subband_code, "
        "timestamp_mjd, stored, storage_location_id, start_mjd, end_mjd) "
        "VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?)",
        (
            (
                f"/data/incoming/{unix_to_iso(t0 + g * 309)}_sb{sb:02d}.hdf5",
                f"{unix_to_iso(t0 + g * 309)}_sb{sb:02d}.hdf5",
                unix_to_iso(t0 + g * 309),
                sb,
                f"sb{sb:02d}",
                (t0 + g * 309) / 86400 + 40587,
                (t0 + g * 309) / 86400 + 40587,
                (t0 + g * 309 + 309) / 86400 + 40587,
            )
            for g in range(groups)
            for sb in range(16)
        ),
    )
    c.execute("INSERT INTO meta VALUES ('max_group_span_mjd', ?)", (309 / 86400,))
    c.execute("COMMIT")
    db.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--pyuvdata-files",
        type=int,
        default=512,
        help="pyuvdata is slow: time it on this many of the files",
    )
    args = ap.parse_args()
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
        paths = sorted(str(p) for p in inc.iterdir())
        (root / "c.toml").write_text(
            'state_dir = "state"\nlog_level = "warning"\n[[storage_locations]]\n'
            'name = "incoming"\npath = "incoming"\n[convert]\nenabled = false\n'
        )
        cfg = load_config(root / "c.toml", env={"HOME": d})
        # warm the page cache, as for every measurement below
        bare_h5py(paths)

        t0 = time.perf_counter()
        assert Service(cfg, convert=False).rescan() == 0
        t_a = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert Service(cfg, convert=False).rescan() == 0
        t_b = time.perf_counter() - t0
        t_c = bare_h5py(paths)
        sub = paths[: args.pyuvdata_files]
        t_d = pyuvdata_loop(sub) * len(paths) / len(sub)
        n = len(paths)
        with sqlite3.connect(cfg.hdf5_db) as c:
            assert c.execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0] == n
            assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == n_groups

        print(f"building a {args.rows:,}-row HDF5 DB ...", file=sys.stderr)
        big = root / "big.sqlite3"
        big_db(big, args.rows)
        t_start = 1759363200.0 + 200 * 86400
        times = []
        for i in range(30):
            s = t_start + i * 3600
            q0 = time.perf_counter()
            res = find_subband_groups_from_db(big, s / 86400 + 40587, (s + 3600) / 86400 + 40587)
            times.append(time.perf_counter() - q0)
            assert 11 <= len(res) <= 13 and all(len(g.files) == 16 for g in res)
        q_med, q_max = statistics.median(times) * 1e3, max(times) * 1e3

    fa, fb, fc, fd = n / t_a, n / t_b, n / t_c, n / t_d
    ok = {"a_c": fa >= fc, "a_d": fa >= 20 * fd, "b": fb >= 30_000, "q": q_med < 10}
    body = f"""## Indexing throughput (`benchmarks/index_throughput.py`)

{n} simulated files ({n_groups} groups; 16 antennas, 48 channels, 24 integrations each),
page cache warm; {machine()}.

| run | files/s | ratio |
|---|---:|---:|
| (a) `run --rescan`, fresh DB | {fa:,.0f} | {fa / fc:.2f}x (c), {fa / fd:.0f}x (d) |
| (b) `run --rescan` again, nothing changed | {fb:,.0f} | {fb / fc:.0f}x (c) |
| (c) bare single-threaded h5py loop, no DB | {fc:,.0f} | 1.00x |
| (d) pyuvdata `read(read_data=False)` per file | {fd:,.0f} | {fd / fc:.3f}x (c) |

`find_subband_groups_from_db` on a {args.rows:,}-row HDF5 DB, one-hour windows (30 queries,
each opening the DB): median {q_med:.2f} ms, max {q_max:.2f} ms.

| target | result |
|---|---|
| (a) >= 1.0x (c) | {fa / fc:.2f}x: {verdict(ok["a_c"])} |
| (a) >= 20x (d) | {fa / fd:.0f}x: {verdict(ok["a_d"])} |
| (b) >= 30,000 files/s | {fb:,.0f}: {verdict(ok["b"])} |
| one-hour window on 1M rows < 10 ms | {q_med:.2f} ms median: {verdict(ok["q"])} |
"""
    print(body)
    write_section("index_throughput", body)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
