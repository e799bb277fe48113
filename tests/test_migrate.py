"""Migrating a legacy deployment: both legacy schemas, thousands of rows, dry run,
SIGKILL at every stage, twice, and a rollback from the backup."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from dsa110_ingest.migrate import SCHEMA_2025_11_15, SCHEMA_2025_11_17
from dsa110_ingest.times import iso_to_unix, unix_to_iso, unix_to_mjd

from .conftest import Site, write_site

N_GROUPS = 200  # 3,200 legacy rows


def legacy_products(site: Site, schema: tuple[str, ...], *, extra: bool = True) -> dict:
    """A products.sqlite3 as upstream left it: hdf5_file_index inside, ms_index beside it."""
    db = site.root / "state" / "products.sqlite3"
    db.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(db)
    cols = [*schema, *(["checksum"] if extra else [])]
    c.execute(f"CREATE TABLE hdf5_file_index ({', '.join(cols)}, PRIMARY KEY (path))")
    c.execute(
        "CREATE TABLE ms_index (path TEXT PRIMARY KEY, start_mjd REAL, end_mjd REAL, "
        "mid_mjd REAL, processed_at REAL, status TEXT, stage TEXT, stage_updated_at REAL, "
        "cal_applied INTEGER, imagename TEXT, ra_deg REAL, dec_deg REAL)"
    )
    t0 = iso_to_unix("2025-11-01T00:00:00")
    rows = []
    on_disk = 0
    for g in range(N_GROUPS):
        base = t0 + g * 309
        legacy_gid = unix_to_iso(base)  # upstream's exact-timestamp group ids
        for sb in range(16):
            if g % 10 == 9 and sb == 5:
                continue  # some incomplete groups
            ts = base + (sb % 3)  # the nodes' jitter
            name = f"{unix_to_iso(ts)}_sb{sb:02d}.hdf5"
            path = site.incoming / name
            if g % 4 != 3:  # a quarter of the files were deleted since
                path.write_bytes(b"x")
                on_disk += 1
            r = {
                "path": str(path),
                "filename": name,
                "group_id": legacy_gid,
                "subband_code": f"sb{sb:02d}",
                "timestamp_iso": unix_to_iso(ts),
                "timestamp_mjd": unix_to_mjd(ts),
                "file_size_bytes": 1,
                "modified_time": ts,
                "indexed_at": ts + 60,
                "stored": 1,
                "subband_num": sb,
                "ra_deg": 10.0 + g,
                "dec_deg": 55.0,
                "obs_date": "x",
                "obs_time": "y",
                "checksum": f"c{g}-{sb}",
            }
            rows.append([r[k] for k in cols])
        if g < 50:  # the first 50 groups were converted: by start time, without group_id
            c.execute(
                "INSERT INTO ms_index (path, start_mjd, mid_mjd, status) VALUES (?,?,?,?)",
                (f"/ms/{legacy_gid}.ms", unix_to_mjd(base + 6), unix_to_mjd(base + 150), "done"),
            )
    c.executemany(f"INSERT INTO hdf5_file_index VALUES ({','.join('?' * len(cols))})", rows)
    c.commit()
    c.close()
    return {"rows": len(rows), "on_disk": on_disk}


@pytest.fixture
def legacy_site(tmp_path: Path) -> Site:
    return write_site(tmp_path, convert='[convert]\nbackend = "command"\ncommand = ["true"]\n')


def _hdf5(site: Site) -> sqlite3.Connection:
    return sqlite3.connect(site.root / "state" / "hdf5.sqlite3")


def _products(site: Site) -> sqlite3.Connection:
    return sqlite3.connect(site.root / "state" / "products.sqlite3")


def _check_migrated(site: Site, info: dict) -> None:
    h = _hdf5(site)
    assert h.execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0] == info["rows"]
    assert (
        h.execute("SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 1").fetchone()[0]
        == info["on_disk"]
    )
    # regrouped with a tolerance: 200 observations, not 3 fragments each
    assert h.execute("SELECT COUNT(*) FROM groups").fetchone()[0] == N_GROUPS
    assert dict(h.execute("SELECT state, COUNT(*) FROM groups GROUP BY state")) == {
        "complete": 180,
        "incomplete": 20,
    }
    jobs = dict(h.execute("SELECT state, COUNT(*) FROM conversion_jobs GROUP BY state"))
    # none of the 50 converted groups again; the 135 complete others are queued
    assert jobs == {"converted": 50, "pending": 135}
    assert h.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    extra = json.loads(h.execute("SELECT legacy_extra FROM hdf5_file_index LIMIT 1").fetchone()[0])
    assert extra["checksum"].startswith("c") and "legacy_group_id" in extra
    assert (
        _products(site)
        .execute("SELECT COUNT(*) FROM ms_index WHERE group_id IS NOT NULL")
        .fetchone()[0]
        == 50
    )


@pytest.mark.parametrize(
    "schema", [SCHEMA_2025_11_15, SCHEMA_2025_11_17], ids=["2025-11-15", "2025-11-17"]
)
def test_migrate_each_legacy_schema(legacy_site: Site, schema: tuple[str, ...]) -> None:
    info = legacy_products(legacy_site, schema)
    dry = legacy_site.cli("migrate", "--dry-run")
    name = "2025-11-17" if schema is SCHEMA_2025_11_17 else "2025-11-15"
    assert f"{info['rows']} rows, schema {name}" in dry.stderr
    assert "would copy 3180 rows" in dry.stderr and "dry run, nothing changed" in dry.stderr
    assert "groups: 200 (180 complete, 20 incomplete" in dry.stderr
    assert (
        _products(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0]
        == info["rows"]
    )
    assert not list((legacy_site.root / "state").glob("*.bak-*"))

    p = legacy_site.cli("migrate")
    assert "backup written" in p.stderr and "dropped the legacy table" in p.stderr
    _check_migrated(legacy_site, info)
    assert (
        not _products(legacy_site)
        .execute("SELECT 1 FROM sqlite_master WHERE name = 'hdf5_file_index'")
        .fetchone()
    )
    again = legacy_site.cli("migrate")
    assert "nothing to migrate" in again.stderr
    _check_migrated(legacy_site, info)


@pytest.mark.parametrize("stage", ["backup", "insert", "commit", "drop"])
def test_sigkill_at_any_stage_then_rerun_ends_the_same(legacy_site: Site, stage: str) -> None:
    info = legacy_products(legacy_site, SCHEMA_2025_11_17)
    p = legacy_site.cli("migrate", "--stop-after", stage, check=False)
    assert p.returncode == -9
    legacy_site.cli("migrate")
    _check_migrated(legacy_site, info)


def _earliest_backup(state: Path, name: str) -> Path:
    """docs/migration.md's rule: the earliest time; in one second, no suffix before .2."""

    def key(p: Path) -> tuple[str, int]:
        stamp, _, n = p.name.removeprefix(f"{name}.bak-").partition(".")
        return stamp, int(n or 1)

    return min(state.glob(f"{name}.bak-*"), key=key)


def test_sigkill_while_backing_up_leaves_nothing_that_looks_like_a_backup(
    legacy_site: Site,
) -> None:
    info = legacy_products(legacy_site, SCHEMA_2025_11_17)
    state = legacy_site.root / "state"
    p = legacy_site.cli("migrate", "--stop-after", "backing-up", check=False)
    assert p.returncode == -9
    assert not list(state.glob("*.bak-*")), "a partial backup must not carry a backup's name"
    partial = [q for q in state.iterdir() if ".partial-backup-" in q.name]
    assert [q.name.partition("-backup-")[0] for q in partial] == [".products.sqlite3.partial"]
    again = legacy_site.cli("migrate")
    assert f"removed {partial[0]}, a partial backup of a killed run" in again.stderr
    assert "backup written" in again.stderr
    assert not [q for q in state.iterdir() if ".partial-backup-" in q.name]
    _check_migrated(legacy_site, info)
    for backup in state.glob("*.bak-*"):  # each one a whole database
        c = sqlite3.connect(backup)
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",), backup
        c.close()
    # roll back as docs/migration.md says, with its rule for picking the backup
    for name in ("products.sqlite3", "hdf5.sqlite3"):
        for suffix in ("-wal", "-shm"):
            (state / (name + suffix)).unlink(missing_ok=True)
        shutil.copy(_earliest_backup(state, name), state / name)
    assert (
        _products(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0]
        == info["rows"]
    )


def test_keep_legacy_and_rollback_from_backup(legacy_site: Site) -> None:
    info = legacy_products(legacy_site, SCHEMA_2025_11_15)
    p = legacy_site.cli("migrate", "--keep-legacy")
    assert "legacy table kept" in p.stderr
    legacy_site.cli("migrate", "--keep-legacy")  # twice: nothing doubles
    _check_migrated(legacy_site, info)
    # roll back as docs/migration.md says: put the backups in place
    state = legacy_site.root / "state"
    for name in ("products.sqlite3", "hdf5.sqlite3"):
        backup = _earliest_backup(state, name)
        for suffix in ("-wal", "-shm"):
            (state / (name + suffix)).unlink(missing_ok=True)
        shutil.copy(backup, state / name)
    assert (
        _products(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0]
        == info["rows"]
    )
    assert _hdf5(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0] == 0


def test_prune_marks_vanished_files_and_ms(legacy_site: Site, sim_groups) -> None:
    files = sim_groups(legacy_site.incoming, n=1)
    legacy_site.cli("run", "--rescan", "--no-convert")
    ms = legacy_site.root / "ms"
    (ms / "a.ms").mkdir(parents=True)
    from dsa110_ingest.db import open_products_at

    with open_products_at(legacy_site.root / "state" / "products.sqlite3") as db:
        db.upsert_ms({"path": str(ms / "a.ms"), "status": "converted"})
        db.upsert_ms({"path": str(ms / "gone.ms"), "status": "converted"})
    files[0].unlink()
    dry = legacy_site.cli("prune", "--dry-run")
    assert "1 subband file(s) newly missing (would mark stored = 0)" in dry.stderr
    assert f"MS gone: {ms / 'gone.ms'}" in dry.stdout
    legacy_site.cli("prune")
    h = _hdf5(legacy_site)
    assert h.execute(
        "SELECT stored FROM hdf5_file_index WHERE path = ?", (str(files[0]),)
    ).fetchone() == (0,)
    assert dict(_products(legacy_site).execute("SELECT path, status FROM ms_index")) == {
        str(ms / "a.ms"): "converted",
        str(ms / "gone.ms"): "missing",
    }
    legacy_site.cli("prune", "--delete-rows")
    assert _products(legacy_site).execute("SELECT COUNT(*) FROM ms_index").fetchone()[0] == 1
    assert all(f.exists() for f in files[1:])  # data files are never deleted


def _doctor(site: Site) -> tuple[int, dict[str, str]]:
    p = site.cli("doctor", check=False)
    levels = {}
    for line in p.stdout.splitlines():
        m = re.match(r"(OK|WARN|FAIL)\s+([^:]+):", line)
        assert m, line
        levels[m.group(2)] = m.group(1)
    return p.returncode, levels


def test_doctor_healthy_then_each_problem(legacy_site: Site, sim_groups) -> None:
    sim_groups(legacy_site.incoming, n=1)
    legacy_site.cli("run", "--rescan", "--no-convert")
    rc, levels = _doctor(legacy_site)
    assert rc == 0 and levels["products db"] == "OK" and levels["location incoming"] == "OK"
    assert levels["hdf5 db integrity"] == "OK" and levels["stray databases"] == "OK"

    (legacy_site.root / "hdf5.sqlite3").write_bytes(b"")  # a stray DB in the cwd
    rc, levels = _doctor(legacy_site)
    assert rc == 0 and levels["stray databases"] == "WARN"

    c = _products(legacy_site)
    c.execute("CREATE TABLE hdf5_file_index (path TEXT PRIMARY KEY)")
    c.commit()
    rc, levels = _doctor(legacy_site)
    assert rc == 1 and levels["products db"] == "FAIL"
    c.execute("DROP TABLE hdf5_file_index")
    c.commit()

    shutil.rmtree(legacy_site.incoming)
    rc, levels = _doctor(legacy_site)
    assert rc == 1 and levels["location incoming"] == "FAIL"
    p = legacy_site.cli("doctor", check=False)
    assert "does not exist; mount or create it" in p.stdout


def test_doctor_reports_a_bad_config(legacy_site: Site) -> None:
    legacy_site.config_path.write_text("bogus = 1\n")
    p = legacy_site.cli("doctor", check=False)
    assert p.returncode == 1 and p.stdout.startswith("FAIL  config: ")


def test_a_second_migrate_is_refused_naming_the_first_and_changes_nothing(
    legacy_site: Site,
) -> None:
    """OPERATOR3 defect 6: the loser of two runs said the database "stayed locked ...; it
    is retried" and exited 1, and nothing retried it."""
    import subprocess
    import sys

    info = legacy_products(legacy_site, SCHEMA_2025_11_17)
    state = legacy_site.root / "state"
    products = state / "products.sqlite3"
    # a migrate in progress: the lock every real run takes, held by another process
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from dsa110_ingest.cli.migrate import migrate_lock\n"
        "with migrate_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(products)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        p = legacy_site.cli("migrate", check=False)
        assert p.returncode == 1, p.stderr
        assert f"another migrate (pid {first.pid}) is running on {products}" in p.stderr
        assert "wait for it to finish" in p.stderr and "retried" not in p.stderr
        assert not list(state.glob("*.bak-*"))  # refused before its backups
        assert legacy_site.cli("migrate", "--dry-run").returncode == 0  # reads only
    finally:
        first.kill()
        first.wait()
    legacy_site.cli("migrate")  # the first is gone (SIGKILL drops its lock)
    _check_migrated(legacy_site, info)


def test_migrate_is_refused_beside_a_running_daemon_and_changes_nothing(
    legacy_site: Site, daemon_factory
) -> None:
    """OPERATOR4 defect 2: a migrate beside a running daemon held the HDF5 DB's write lock
    for its whole copy; the daemon reported itself unhealthy meanwhile."""
    info = legacy_products(legacy_site, SCHEMA_2025_11_17)
    state = legacy_site.root / "state"
    d = daemon_factory(legacy_site, "--no-convert")
    d.wait_ready(60)
    before = _products(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()
    p = legacy_site.cli("migrate", check=False)
    assert p.returncode == 1, p.stderr
    assert f"a dsa110-ingest daemon (pid {d.proc.pid}) is running on" in p.stderr
    assert "stop it first" in p.stderr and "changed nothing" in p.stderr
    assert not list(state.glob("*.bak-*"))  # refused before its backups
    legacy = _products(legacy_site).execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()
    assert legacy == before == (info["rows"],)  # the legacy table is still all there
    assert legacy_site.cli("migrate", "--dry-run").returncode == 0  # reads only
    assert d.stop() == 0
    legacy_site.cli("migrate")  # the daemon is gone: the same command now migrates
    _check_migrated(legacy_site, info)


def test_two_migrates_at_once_one_migrates_the_other_says_so(legacy_site: Site) -> None:
    import subprocess
    import sys

    info = legacy_products(legacy_site, SCHEMA_2025_11_17)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "dsa110_ingest", "migrate", "--no-queue"],
            env=legacy_site.env(),
            cwd=legacy_site.root,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [(r.wait(timeout=300), r.stderr.read()) for r in runs if r.stderr is not None]
    assert sorted(code for code, _ in outs) in ([0, 0], [0, 1]), outs
    for code, err in outs:
        assert "retried" not in err, err
        if code == 1:
            assert "another migrate (pid" in err and "wait for it to finish" in err, err
        else:
            assert "dropped the legacy table" in err or "nothing to migrate" in err, err
    h = _hdf5(legacy_site)
    assert h.execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0] == info["rows"]
