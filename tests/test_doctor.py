"""Each doctor check alone, on real folders, real SQLite files and a mounts table of our
own (the filesystem types a check must react to are rarely the ones this machine has)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from dsa110_ingest import doctor
from dsa110_ingest.config import Config
from dsa110_ingest.doctor import (
    CHECKS,
    Check,
    Context,
    check_config,
    check_converter,
    check_daemon,
    check_db_path,
    check_executor,
    check_integrity_both,
    check_legacy_table,
    check_locations,
    check_output_disk,
    check_strays,
    run_checks,
    stray_databases,
)

from .conftest import Site, write_site


def _mounts(tmp_path: Path, *rows: tuple[str, str]) -> str:
    """A /proc/self/mounts of our own: (mount point, fs type) rows below a local root."""
    f = tmp_path / "mounts"
    lines = ["/dev/root / ext4 rw 0 0", *(f"srv:/x {m} {t} rw 0 0" for m, t in rows)]
    f.write_text("\n".join(lines) + "\n")
    return str(f)


def _levels(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.level for c in checks}


def _cfg(site: Site, toml: str = "") -> Config:
    if toml:
        site.config_path.write_text(site.config_path.read_text() + toml)
    return site.cfg


def test_every_check_is_listed_once_and_run_checks_runs_them_in_order(site: Site) -> None:
    assert len(set(CHECKS)) == len(CHECKS)
    names = [c.name for c in run_checks(site.cfg, site.root, _mounts(site.root))]
    assert names[0] == "config"
    for expected in ("hdf5 db path", "products db path", "stray databases", "output disk"):
        assert expected in names


def test_a_check_line_names_its_level_and_the_fix() -> None:
    c = Check("FAIL", "location a", "/d does not exist; mount or create it")
    assert c.line() == "FAIL  location a: /d does not exist; mount or create it"
    assert Check("OK", "x", "y").line() == "OK    x: y"


def test_config_check_names_the_file(site: Site) -> None:
    (c,) = check_config(site.cfg, Context(site.root))
    assert c.level == "OK" and str(site.config_path) in c.detail


def test_a_database_on_a_network_or_fuse_filesystem_fails(tmp_path: Path) -> None:
    local, nfs, fuse = tmp_path / "local", tmp_path / "nfs", tmp_path / "fuse"
    for d in (local, nfs, fuse):
        d.mkdir()
    mounts = _mounts(tmp_path, (str(nfs), "nfs4"), (str(fuse), "fuse.sshfs"))
    (ok,) = check_db_path("db", local / "h.sqlite3", mounts)
    assert ok.level == "OK" and "ext4" in ok.detail
    for d, fstype in ((nfs, "nfs4"), (fuse, "fuse.sshfs")):
        (bad,) = check_db_path("db", d / "h.sqlite3", mounts)
        assert bad.level == "FAIL" and fstype in bad.detail and "local disk" in bad.detail


def test_a_relative_database_path_fails(tmp_path: Path) -> None:
    (c,) = check_db_path("db", Path("rel/h.sqlite3"), _mounts(tmp_path))
    assert c.level == "FAIL" and "absolute" in c.detail


def test_a_database_in_a_folder_yet_to_be_made_is_judged_by_its_nearest_parent(
    tmp_path: Path,
) -> None:
    (c,) = check_db_path("db", tmp_path / "a" / "b" / "h.sqlite3", _mounts(tmp_path))
    assert c.level == "OK"


def test_locations_missing_none_or_blind_to_inotify(site: Site) -> None:
    none = site.cfg.with_overrides(storage_locations=())
    assert _levels(list(check_locations(none, Context(site.root)))) == {"storage locations": "FAIL"}
    cfg = _cfg(
        site,
        '[[storage_locations]]\nname = "gone"\npath = "not-there"\n'
        '[[storage_locations]]\nname = "forced"\npath = "forced"\nwatch = "inotify"\n',
    )
    (site.root / "forced").mkdir()
    mounts = _mounts(site.root, (str(site.incoming), "nfs"), (str(site.root / "forced"), "cifs"))
    got = {c.name: c for c in check_locations(cfg, Context(site.root, mounts))}
    assert (
        got["location incoming"].level == "OK" and "watch poll" in got["location incoming"].detail
    )
    assert got["location gone"].level == "FAIL" and "does not exist" in got["location gone"].detail
    assert (
        got["location forced"].level == "WARN" and 'watch = "poll"' in got["location forced"].detail
    )


def test_stray_databases_where_upstream_left_them(site: Site) -> None:
    cfg = site.cfg
    assert stray_databases(cfg, site.root) == []
    (site.root / "state" / "state").mkdir(parents=True)
    stray = site.root / "state" / "state" / "products.sqlite3"
    stray.write_bytes(b"")
    (site.root / "hdf5.sqlite3").write_bytes(b"")
    found = stray_databases(cfg, site.root)
    assert set(found) == {stray, site.root / "hdf5.sqlite3"}
    (c,) = check_strays(cfg, Context(site.root))
    assert c.level == "WARN" and str(stray) in c.detail
    # the configured databases are never strays, wherever they are
    at_cwd = cfg.with_overrides(hdf5_db=site.root / "hdf5.sqlite3")
    assert site.root / "hdf5.sqlite3" not in stray_databases(at_cwd, site.root)


def test_integrity_of_absent_sound_and_damaged_databases(site: Site) -> None:
    cfg = site.cfg
    assert _levels(list(check_integrity_both(cfg, Context(site.root)))) == {
        "hdf5 db integrity": "WARN",
        "products db integrity": "WARN",
    }
    site.db().close()
    cfg.products_db.write_bytes(b"this is not a database, just text " * 200)
    got = {c.name: c for c in check_integrity_both(cfg, Context(site.root))}
    assert got["hdf5 db integrity"].level == "OK"
    assert got["products db integrity"].level == "FAIL"
    assert str(cfg.products_db) in got["products db integrity"].detail


def test_legacy_table_in_the_products_db_fails_with_the_migrate_command(site: Site) -> None:
    import sqlite3

    cfg = site.cfg
    assert list(check_legacy_table(cfg, Context(site.root))) == []  # no products DB yet
    cfg.products_db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(cfg.products_db) as conn:
        conn.execute("CREATE TABLE hdf5_file_index (path TEXT)")
    (c,) = check_legacy_table(cfg, Context(site.root))
    assert c.level == "FAIL" and "dsa110-ingest migrate --dry-run" in c.detail


def test_converter_and_executor_when_conversion_is_off_or_local(site: Site) -> None:
    (c,) = check_converter(site.cfg, Context(site.root))
    assert c.level == "OK" and "disabled" in c.detail
    (e,) = check_executor(site.cfg, Context(site.root))
    assert e.level == "OK" and e.detail.startswith("local")


def test_dask_executor_with_no_scheduler_listening_fails_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    conv = '[convert]\nenabled = false\nexecutor = "dask"\ndask_scheduler = "tcp://127.0.0.1:9"\n'
    cfg = write_site(tmp_path, convert=conv).cfg
    (c,) = check_executor(cfg, Context(tmp_path))
    assert c.level == "FAIL" and "127.0.0.1:9" in c.detail and "unreachable" in c.detail


def _converting(cfg: Config) -> Config:
    return dataclasses.replace(cfg, convert=dataclasses.replace(cfg.convert, enabled=True))


def test_output_disk_reports_free_space_of_the_nearest_existing_folder(site: Site) -> None:
    cfg = _converting(site.cfg)
    assert not cfg.convert.output_dir.exists()
    (c,) = check_output_disk(cfg, Context(site.root))
    assert c.name == "output disk" and str(cfg.convert.output_dir) in c.detail
    assert re.match(r"\d+ GiB free for ", c.detail)


def test_daemon_check_is_silent_before_the_first_start_and_warns_when_stopped(
    site: Site,
) -> None:
    cfg = site.cfg
    assert list(check_daemon(cfg, Context(site.root))) == []
    site.db().close()
    (c,) = check_daemon(cfg, Context(site.root))
    assert c.level == "WARN" and "systemctl status dsa110-ingest" in c.detail


@pytest.mark.parametrize(
    ("free_gib", "level", "says"),
    [
        (65, "WARN", "65 GiB free for {out}, below the 1500 GiB warning threshold"),
        (2, "FAIL", "2 GiB free for {out}, below the 5 GiB failure threshold"),
        (4000, "OK", "4000 GiB free for {out}"),
    ],
)
def test_output_disk_states_the_threshold_and_the_fix(
    site: Site, monkeypatch: pytest.MonkeyPatch, free_gib: int, level: str, says: str
) -> None:
    cfg = _converting(site.cfg)
    usage = shutil.disk_usage(site.root)
    fake = usage._replace(free=free_gib * doctor.GIB)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: fake)
    (c,) = check_output_disk(cfg, Context(site.root))
    assert c.level == level
    assert c.detail.startswith(says.format(out=cfg.convert.output_dir)), c.detail
    fix = "; free space there, or set [convert] output_dir to a larger disk"
    assert c.detail.endswith(fix) is (level != "OK")


def test_output_disk_is_not_judged_when_conversion_is_off(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = site.cfg
    assert not cfg.convert.enabled
    usage = shutil.disk_usage(site.root)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: usage._replace(free=doctor.GIB))
    (c,) = check_output_disk(cfg, Context(site.root))
    assert (
        c.level == "OK" and c.detail == f"not used: conversion disabled ({cfg.convert.output_dir})"
    )
