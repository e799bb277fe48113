"""The conversion dispatcher driven by the daemon and by `run --rescan`: exactly once,
retries, timeouts, killed workers, a locked products DB, names a shell would choke on,
a lease taken over, a remote result checked from the daemon's side."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from dsa110_ingest.convert.dispatcher import Dispatcher
from dsa110_ingest.convert.executor import LocalProcessExecutor
from dsa110_ingest.convert.request import build_request
from dsa110_ingest.db import open_index_at

from ..conftest import (
    SMALL,
    Site,
    converter_script,
    db_count,
    hold_write_lock,
    wait_for,
    write_site,
)
from .conftest import ancestry_body, claim, command_site, indexed_site, read_runs


def _products(site: Site) -> Path:
    return site.root / "state" / "products.sqlite3"


def _hdf5(site: Site) -> Path:
    return site.root / "state" / "hdf5.sqlite3"


def test_rescan_converts_every_complete_group_once(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = command_site(tmp_path, ok_script)
    sim_groups(site.incoming, n=3)
    p = site.cli("run", "--rescan")
    (done,) = [json.loads(ln) for ln in p.stderr.splitlines() if "rescan.conversions" in ln]
    assert done["converted"] == 3
    rows = (
        sqlite3.connect(_products(site))
        .execute("SELECT group_id, path, status, start_mjd, ra_deg FROM ms_index ORDER BY group_id")
        .fetchall()
    )
    assert len(rows) == 3 and all(r[2] == "converted" and r[3] and r[4] for r in rows)
    inputs = (Path(rows[0][1]) / "inputs.txt").read_text().splitlines()
    assert len(inputs) == 16
    # frequency order: sb00 is the top of the band, so it comes last
    assert inputs[-1].endswith("_sb00.hdf5") and inputs[0].endswith("_sb15.hdf5")
    ev = [e["type"] for e in site.events()]
    assert ev.count("group.complete") == 3 and ev.count("group.converted") == 3
    site.cli("run", "--rescan")  # again: nothing converts twice
    assert [e["type"] for e in site.events()].count("group.converted") == 3
    assert db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 3
    groups = site.cli_json("groups", "--json")
    assert {g["conversion"] for g in groups} == {"converted"}


def test_failing_converter_backs_off_then_fails_with_its_error(tmp_path: Path, sim_groups) -> None:
    script = converter_script(tmp_path / "bad", 'print("no license", file=sys.stderr); sys.exit(7)')
    site = command_site(tmp_path, script, "max_attempts = 3\n")
    sim_groups(site.incoming, n=1)
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode == 1 and "converter exited with status 7" in p.stderr
    (g,) = site.cli_json("groups", "--json")
    assert (g["conversion"], g["attempts"]) == ("failed", 3)
    assert "exited with status 7" in g["last_error"]
    failed = [e for e in site.events() if e["type"] == "group.failed"]
    assert len(failed) == 1 and failed[0]["payload"]["attempts"] == 3
    assert db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 0
    # the operator fixes the cause and retries
    converter_script(script)
    site.cli("retry", g["group_id"])
    site.cli("run", "--rescan")
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "converted"


def test_hanging_converter_is_killed_at_the_timeout(tmp_path: Path, sim_groups) -> None:
    script = converter_script(tmp_path / "hang", "time.sleep(60)")
    site = command_site(tmp_path, script, "max_attempts = 1\ntimeout_seconds = 1.5\n")
    sim_groups(site.incoming, n=1)
    t0 = time.monotonic()
    assert site.cli("run", "--rescan", check=False).returncode == 1
    assert time.monotonic() - t0 < 20
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "failed" and "longer than timeout_seconds (1.5 s)" in g["last_error"]


def test_file_names_with_spaces_and_shell_metacharacters(tmp_path: Path, sim_groups) -> None:
    script = converter_script(tmp_path / "ok")
    root = tmp_path / "we ird; $(touch PWNED) `id` 'q'"
    site = command_site(root, script)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan")
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "converted"
    assert len((Path(g["ms_path"]) / "inputs.txt").read_text().splitlines()) == 16
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_killed_worker_is_retried_and_leaves_no_half_ms(
    tmp_path: Path, daemon_factory, sim_groups
) -> None:
    marker = tmp_path / "started"
    script = converter_script(
        tmp_path / "slow",
        f"open({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n'); "
        "os.makedirs(out); open(os.path.join(out, 'partial'), 'w').write('x'); time.sleep(3); "
        "import shutil; shutil.rmtree(out)",
    )
    site = command_site(tmp_path, script)
    d = daemon_factory(site)
    d.wait_ready()
    sim_groups(site.incoming, n=1)
    wait_for(lambda: marker.exists(), 20)
    # the converter's parent is the worker process: kill that, mid-conversion
    conv_pid = int(marker.read_text().split()[0])
    worker_pid = int(Path(f"/proc/{conv_pid}/stat").read_text().split(") ")[1].split()[1])
    os.kill(worker_pid, signal.SIGKILL)
    gid = site.cli_json("groups", "--json")[0]["group_id"]
    wait_for(
        lambda: db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 1,
        30,
        lambda: d.log.read_text()[-3000:],
    )
    final = site.root / "ms" / f"{gid}.ms"
    assert sorted(p.name for p in final.iterdir()) == ["inputs.txt"]
    assert not list((site.root / "ms").glob(".*tmp-*"))
    (g,) = site.cli_json("groups", "--json")
    assert (g["conversion"], g["attempts"]) == ("converted", 2)
    assert "SIGKILL" in d.log.read_text()
    d.stop()


def test_daemon_killed_mid_conversion_resumes_after_the_lease(
    tmp_path: Path, daemon_factory, sim_groups, slow_converter
) -> None:
    conv = slow_converter(2)
    site = command_site(tmp_path, conv.script)
    sim_groups(site.incoming, n=1)
    d = daemon_factory(site)
    wait_for(conv.started, 30)
    d.proc.send_signal(signal.SIGKILL)  # the converter dies with it (PDEATHSIG)
    d.proc.wait()
    d2 = daemon_factory(site)
    wait_for(
        lambda: db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 1,
        30,
        lambda: d2.log.read_text()[-3000:],
    )
    assert [e["type"] for e in site.events()].count("group.converted") == 1
    assert conv.runs() == 2
    d2.stop()


def test_locked_products_db_is_written_after_release(tmp_path: Path, ok_script: Path) -> None:
    site = indexed_site(tmp_path, ok_script)  # index only: the job waits
    from dsa110_ingest.db import open_products_at

    open_products_at(_products(site)).close()
    locker = hold_write_lock(_products(site), 12)
    t0 = time.monotonic()
    p = site.cli("run", "--rescan", timeout=180)
    locker.wait()
    assert time.monotonic() - t0 >= 10
    (done,) = [json.loads(ln) for ln in p.stderr.splitlines() if "rescan.conversions" in ln]
    assert done["converted"] == 1
    assert db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 1


def test_incomplete_groups_convert_only_when_configured(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    site = command_site(
        tmp_path, ok_script, "convert_incomplete_after_seconds = 0.1\nmin_subbands = 14\n"
    )
    sim_groups(site.incoming, n=1, missing=(3,))
    sim_groups(site.incoming, n=1, start="2025-10-02T01:00:00", missing=(1, 2, 3))
    site.cli("run", "--rescan")
    groups = {g["group_id"]: g for g in site.cli_json("groups", "--json")}
    states = sorted((g["n_subbands"], g["conversion"]) for g in groups.values())
    assert states == [(13, None), (15, "converted")]
    row = (
        sqlite3.connect(_products(site))
        .execute("SELECT missing_subbands, n_subbands FROM ms_index")
        .fetchone()
    )
    assert row == ("sb03", 15)


def test_convert_command_in_the_foreground_and_force(tmp_path: Path, ok_script: Path) -> None:
    site = indexed_site(tmp_path, ok_script)  # index only: the job waits
    gid = site.cli_json("groups", "--json")[0]["group_id"]
    p = site.cli("convert", gid)
    assert "written in" in p.stderr
    assert "already converted" in site.cli("convert", gid).stderr
    p = site.cli("convert", gid, "--force")
    assert "written in" in p.stderr
    assert db_count(_products(site), "SELECT COUNT(*) FROM ms_index") == 1
    assert [e["type"] for e in site.events()].count("group.converted") == 2


def test_newest_first_order(tmp_path: Path, sim_groups) -> None:
    log = tmp_path / "order.log"
    script = converter_script(tmp_path / "c", f"open({str(log)!r}, 'a').write(out + '\\n')")
    site = command_site(tmp_path, script, 'order = "newest_first"\n')
    sim_groups(site.incoming, n=3)
    site.cli("run", "--rescan")
    names = [Path(line).name for line in log.read_text().splitlines()]
    assert names == sorted(names, reverse=True)


def test_command_backend_receives_the_recipe_in_inputs_json(
    tmp_path: Path, ok_script: Path, sim_groups
) -> None:
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{ok_script}", "{{output}}", '
        '"{inputs_json}"]\noutput_dir = "ms"\nphasing = "meridian_mid"\n'
    )
    site = write_site(tmp_path, convert=conv)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan")
    (g,) = site.cli_json("groups", "--json")
    recipe = json.loads((Path(g["ms_path"]) / "inputs.txt").read_text())
    assert recipe["phasing"] == "meridian_mid" and recipe["field_names"] == ["meridian_icrs_mid"]
    assert recipe["pointing_dec_deg"] == pytest.approx(55.0)
    assert recipe["pointing_dec_source"] == "file"
    assert len(recipe["inputs"]) == 16 and recipe["inputs"][-1].endswith("_sb00.hdf5")
    assert all(recipe["descending_channels"]) and len(recipe["time_grid_jd"]) == SMALL.ntimes
    # ms_index and the event carry the MS's phase centre, not the files' drift centre
    (row,) = sqlite3.connect(_products(site)).execute("SELECT dec_deg FROM ms_index").fetchall()
    assert abs(row[0] - 55.0) < 0.5
    (conv_ev,) = [e for e in site.events() if e["type"] == "group.converted"]
    assert conv_ev["payload"]["phasing"] == "meridian_mid"
    assert conv_ev["payload"]["max_time_offset_s"] == 0.0


def test_the_dispatcher_gives_up_an_attempt_whose_lease_was_taken(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    script = converter_script(tmp_path / "slow", ancestry_body(runs, sleep=30))
    site = indexed_site(tmp_path, script)
    cfg = site.cfg
    d = Dispatcher(cfg, LocalProcessExecutor(cfg.convert.backend))
    d.start()
    try:
        wait_for(lambda: read_runs(runs), 30)
        (run,) = read_runs(runs)
        with open_index_at(cfg.hdf5_db) as db:
            # another daemon, whose clock says our lease has lapsed, takes the group
            gid, _ = claim(db, "daemon-b", time.time() + cfg.convert.lease_seconds + 1)
            wait_for(lambda: not d.running, 30, "the dispatcher kept a lost attempt")
            assert db.job(gid).lease_owner == "daemon-b"
        # the given-up converter is stopped, not left to finish and race the new attempt
        wait_for(lambda: not Path(f"/proc/{run['pid']}").exists(), 30)
        assert [r["what"] for r in read_runs(runs)] == ["start"]
    finally:
        d.stop()
    assert db_count(cfg.products_db, "SELECT COUNT(*) FROM ms_index") == 0


def test_a_remote_result_is_checked_from_the_daemons_side(tmp_path: Path, ok_script: Path) -> None:
    site = indexed_site(tmp_path, ok_script)
    cfg = site.cfg
    with open_index_at(cfg.hdf5_db, readonly=True) as db:
        gid = db.list_groups(None, None, None)[0].group_id
        req = build_request(cfg, db, gid)
    d = Dispatcher(cfg, LocalProcessExecutor())
    # a worker on another host said it wrote the MS, but this host does not see it
    why = d._check_here(req, {"ms_path": req.output})
    assert why is not None and "does not exist" in why and "storage shared by the workers" in why
    Path(req.output).mkdir(parents=True)
    (Path(req.output) / "inputs.txt").write_text("x")
    assert d._check_here(req, {"ms_path": req.output}) is None
