"""Permanent vs transient conversion failures through the real queue (`run --rescan`,
the daemon, `convert`): data errors end the group at once with a reason; node conditions
(a full output disk, a converter that says EX_TEMPFAIL) are retried without using up
attempts; `convert --force` takes the dispatcher's lease."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsa110_ingest.config import load_config
from dsa110_ingest.convert import recorder, worker
from dsa110_ingest.convert.claimfile import CLAIM_NAME
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.db import open_index_at
from dsa110_ingest.errors import (
    ConversionError,
    PermanentConversionError,
    TransientConversionError,
)
from dsa110_ingest.times import iso_to_unix
from dsa110_ingest.tools.simulate import write_subband_file

from ..conftest import SMALL, Site, converter_script, db_count, wait_for
from .conftest import command_site, indexed_site, retarget


def _job(site: Site) -> sqlite3.Row:
    conn = sqlite3.connect(site.root / "state" / "hdf5.sqlite3")
    conn.row_factory = sqlite3.Row
    (row,) = conn.execute("SELECT * FROM conversion_jobs").fetchall()
    return row


def _written(out: Path) -> list[Path]:
    """What a conversion left in the output_dir (its ownership claim is not one)."""
    return [p for p in out.iterdir() if p.name != CLAIM_NAME]


def _ms_rows(site: Site) -> int:
    return db_count(site.root / "state" / "products.sqlite3", "SELECT COUNT(*) FROM ms_index")


def test_subband_from_another_observation_fails_the_group_at_once(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = command_site(tmp_path, ok_script, "max_attempts = 4\n")
    files = sim_groups(site.incoming, n=1)
    stray = next(f for f in files if f.name.endswith("_sb04.hdf5"))
    # the header, not the name, carries the times: this file holds the next group's
    # five minutes (within the indexer's name/header skew limit)
    write_subband_file(stray, iso_to_unix("2025-10-02T00:05:00"), 4, SMALL)
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode != 0, p.stderr[-5000:]
    assert "sb04" in p.stderr and "another observation" in p.stderr
    (g,) = site.cli_json("groups", "--json")
    assert (g["conversion"], g["attempts"]) == ("failed", 1)
    assert "sb04" in g["last_error"] and "min_time_overlap" in g["last_error"]
    (failed,) = [e for e in site.events() if e["type"] == "group.failed"]
    assert failed["payload"]["kind"] == "permanent" and "sb04" in failed["payload"]["error"]
    status = site.cli("status", check=False).stdout  # non-zero: a group failed
    assert "conversion failed (1x)" in status and "sb04" in status
    assert _ms_rows(site) == 0
    assert not (tmp_path / "ms").exists() or not _written(tmp_path / "ms")


@pytest.mark.parametrize(
    ("code", "state", "attempts"), [(65, "failed", 1), (66, "failed", 1), (75, "pending", 0)]
)
def test_command_exit_codes_map_onto_the_classes(
    tmp_path: Path, sim_groups, code: int, state: str, attempts: int
) -> None:
    script = converter_script(tmp_path / "c", f"sys.exit({code})")
    site = command_site(tmp_path, script, "max_attempts = 4\n")
    sim_groups(site.incoming, n=1)
    t0 = time.monotonic()
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode != 0 and time.monotonic() - t0 < 60  # a waiting group ends the pass
    job = _job(site)
    assert (job["state"], job["attempts"]) == (state, attempts)
    assert f"status {code}" in job["last_error"]
    kinds = [e["payload"]["kind"] for e in site.events() if e["type"] == "group.failed"]
    assert kinds == (["permanent"] if state == "failed" else [])


def test_disk_full_during_conversion_is_the_nodes_condition(tmp_path: Path, sim_groups) -> None:
    """A real full disk: the output folder is a 1.5 MiB tmpfs (in a private mount
    namespace) and the converter writes 3 MiB into it."""
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespaces here: {probe.stderr.decode()[:200]}")
    script = converter_script(
        tmp_path / "c",
        "open(out + '.spill', 'wb').write(bytes(3 << 20))",
    )
    site = command_site(tmp_path, script, "max_attempts = 1\n")
    sim_groups(site.incoming, n=1)
    (site.root / "ms").mkdir()
    env = site.env()
    p = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1536k tmpfs "$0" && exec "$1" -m dsa110_ingest run --rescan',
            str(site.root / "ms"),
            sys.executable,
        ],
        env=env,
        cwd=site.root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode != 0
    job = _job(site)
    # max_attempts = 1, yet the group is not failed: the disk is to blame, not the data
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert "output disk full (ENOSPC) while writing" in job["last_error"]
    assert "MiB free" in job["last_error"]
    assert not [e for e in site.events() if e["type"] == "group.failed"]
    # with space again (the tmpfs is gone with its namespace) the retry converts
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db, db.transaction("retry now"):
        db.dbapi_connection().execute("UPDATE conversion_jobs SET next_attempt_at = 0")
    site.cli("run", "--rescan")
    assert _job(site)["state"] == "converted" and _ms_rows(site) == 1


def test_a_failure_on_a_full_disk_is_not_counted(tmp_path: Path, monkeypatch) -> None:
    """The dispatcher's own check (a worker killed by SIGABRT says nothing else)."""
    cfg = load_config(None, env={})
    monkeypatch.setattr(worker, "free_bytes", lambda _p: 10 << 20)
    err = recorder.classify(cfg, "conversion process killed by SIGABRT")
    assert isinstance(err, TransientConversionError) and not err.counts
    assert "ENOSPC" in str(err) and "SIGABRT" in str(err)
    # data errors stay data errors whatever the disk says
    assert recorder.classify(cfg, PermanentConversionError("sb03 bad")).permanent
    monkeypatch.setattr(worker, "free_bytes", lambda _p: 100 << 30)
    plain = recorder.classify(cfg, "conversion process killed by SIGABRT")
    assert type(plain) is ConversionError and plain.counts


def test_convert_force_refuses_while_another_holds_the_lease(
    tmp_path: Path, ok_script: Path
) -> None:
    site = indexed_site(tmp_path, ok_script)  # index only: the job waits
    gid = site.cli_json("groups", "--json")[0]["group_id"]
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db:
        assert db.lease_job(gid, "elsewhere:1", time.time(), 600) is not None
    p = site.cli("convert", gid, "--force", check=False)
    assert p.returncode == 1 and "being converted by elsewhere:1" in p.stderr
    assert not [e for e in site.events() if e["type"] == "group.converted"]
    assert not (tmp_path / "ms").exists() or not _written(tmp_path / "ms")


def test_convert_force_beside_the_daemon_never_gives_two_conversions(
    tmp_path: Path, daemon_factory, sim_groups, slow_converter
) -> None:
    # the daemon's conversion must outlast two CLI start-ups, which on two loaded cores
    # have taken over 5 s each: else `--force` rightly converts a second time after it
    conv = slow_converter(25)
    site = command_site(tmp_path, conv.script)
    d = daemon_factory(site)
    d.wait_ready()
    sim_groups(site.incoming, n=1)
    wait_for(conv.started, 60, lambda: d.log.read_text()[-3000:])
    gid = site.cli_json("groups", "--json")[0]["group_id"]
    p = site.cli("convert", gid, "--force", check=False)
    assert p.returncode == 1 and "being converted by" in p.stderr
    wait_for(lambda: _ms_rows(site) == 1, 120, lambda: d.log.read_text()[-3000:])
    d.stop()
    assert [e["type"] for e in site.events()].count("group.converted") == 1
    assert conv.runs() == 1  # one conversion ran, not two


def test_worker_refuses_a_too_small_disk_before_writing(
    tmp_path: Path, group_request: ConversionRequest, monkeypatch
) -> None:
    req = retarget(group_request, tmp_path)
    monkeypatch.setattr(worker, "free_bytes", lambda _p: 1000)
    with pytest.raises(TransientConversionError, match=r"ENOSPC\) before writing"):
        worker.run(req)
    assert not Path(req.output).exists()
