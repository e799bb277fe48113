"""What `groups`, `status` and `convert` say after a converter was SIGKILLed, after a
member file was pruned, and after only `run --rescan` ran (no daemon)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..conftest import Site, converter_script, wait_for, write_site


def _site(tmp_path: Path) -> tuple[Site, Path, Path]:
    """A command-backend site whose converter hangs while ``slow`` exists; ``marker``
    gets one x per run started."""
    slow, marker = tmp_path / "slow", tmp_path / "started"
    body = (
        f"open({str(marker)!r}, 'a').write('x'); "
        f"time.sleep(600 if os.path.exists({str(slow)!r}) else 0)"
    )
    script = converter_script(tmp_path / "conv", body)
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", "{{inputs}}"]\n'
        'output_dir = "ms"\nlease_seconds = 600\n'
    )
    return write_site(tmp_path / "site", convert=conv), slow, marker


def _job_state(site: Site, gid: str) -> str:
    with site.db(readonly=True) as db:
        job = db.job(gid)
    return job.state if job else ""


def test_a_killed_convert_is_reported_gone_and_the_next_convert_takes_over(
    tmp_path: Path, sim_groups
) -> None:
    site, slow, marker = _site(tmp_path)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    (gid,) = [g["group_id"] for g in site.cli_json("groups", "--json")]
    slow.touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "convert", gid],
        env=site.env(),
        cwd=site.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(marker.exists, 120, "the converter never started")
        assert _job_state(site, gid) == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)

    gone = f"was running in pid {proc.pid}, which is gone; retried when the lease expires in"
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "running" and g["conversion_note"].startswith(gone)
    assert f"`dsa110-ingest convert {gid}` takes it over now" in g["conversion_note"]
    line = next(x for x in site.cli("groups").stdout.splitlines() if x.startswith(gid))
    assert gone in line
    status = site.cli("status", check=False).stdout
    assert f"conversion running {gid}: {gone}" in status

    slow.unlink()
    p = site.cli("convert", gid, check=False)
    assert p.returncode == 0, p.stderr
    assert f"pid {proc.pid} on this host, which held the lease, is gone; took its lease over" in (
        p.stderr
    )
    (g,) = site.cli_json("groups", "--json")
    assert g["conversion"] == "converted" and g["conversion_note"] is None
    assert marker.read_text() == "xx"


def test_convert_still_refuses_a_live_holder(tmp_path: Path, sim_groups) -> None:
    """The takeover needs proof: a live process of that pid keeps its lease."""
    import socket
    import time

    site, _slow, _marker = _site(tmp_path)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    (gid,) = [g["group_id"] for g in site.cli_json("groups", "--json")]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with site.db() as db:
            owner = f"convert:{socket.gethostname()}:{alive.pid}:abcd"
            assert db.lease_job(gid, owner, time.time(), 600) is not None
        p = site.cli("convert", gid, check=False)
        assert p.returncode == 1 and f"is being converted by {owner} right now" in p.stderr
        (g,) = site.cli_json("groups", "--json")
        assert g["conversion_note"] is None
    finally:
        alive.kill()
        alive.wait(60)


def test_the_subbands_column_counts_files_on_disk(tmp_path: Path, sim_groups) -> None:
    site = write_site(tmp_path)
    files = sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    files[1].unlink()
    site.cli("prune")
    (g,) = site.cli_json("groups", "--json")
    assert len(g["files"]) == 15 and len(g["missing_subbands"]) == 1
    line = next(x for x in site.cli("groups").stdout.splitlines() if x.startswith(g["group_id"]))
    assert line.split()[2] == "15/16", line


def test_status_after_only_a_rescan_says_what_ran(tmp_path: Path, sim_groups) -> None:
    site = write_site(tmp_path)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    p = site.cli("status", check=False)
    assert p.returncode == 3
    assert "has never run" not in p.stdout
    assert "daemon:      stopped: no live daemon; the last `run --rescan` ended at " in p.stdout
    assert "exit 0)" in p.stdout
    st = json.loads(site.cli("status", "--json", check=False).stdout)
    assert st["last_rescan"]["exit_code"] == 0 and st["daemon"]["state"] == "stopped"


def test_status_quotes_the_name_pattern_as_written(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    (site.incoming / "not-a-subband.hdf5").write_bytes(b"x")
    site.cli("run", "--rescan", "--no-convert", check=False)
    line = next(x for x in site.cli("status", check=False).stdout.splitlines() if "misnamed" in x)
    assert f"`{site.cfg.pattern}`" in line and "\\\\" not in line, line
