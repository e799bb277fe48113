"""The command line as an operator runs it: real processes, real files, real DBs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dsa110_ingest import __version__

from .conftest import Site, converter_script, wait_for, write_site
from .convert.conftest import command_site


def test_simulate_then_rescan_then_query(site: Site) -> None:
    site.cli(
        "simulate",
        "--out",
        str(site.incoming),
        "--groups",
        "2",
        "--nants",
        "4",
        "--nchan",
        "2",
        "--missing",
        "9",
    )
    (site.incoming / "2025-10-02T00:30:00_sb00.hdf5").write_bytes(b"\0" * 10)
    p = site.cli("run", "--rescan")
    # off a terminal the summary is a JSON line like every other
    (summary,) = [json.loads(ln) for ln in p.stderr.splitlines() if "rescan.summary" in ln]
    assert (summary["seen"], summary["indexed"], summary["rejected"]) == (31, 30, 1)
    assert (summary["groups_completed"], summary["groups_incomplete"]) == (0, 2)
    groups = site.cli_json("groups", "--json")
    assert [g["state"] for g in groups] == ["incomplete", "incomplete"]
    assert all(g["missing_subbands"] == ["sb09"] and len(g["files"]) == 15 for g in groups)
    assert all(g["n_subbands"] == 15 and g["expected_subbands"] == 16 for g in groups)
    events = site.events()
    assert [e["type"] for e in events] == ["group.incomplete", "group.incomplete"]
    assert {"id", "type", "group_id", "created_at"} <= set(events[0])
    st = site.cli_json("status", "--json")
    assert st["files"]["indexed"] == 30 and st["groups"] == {"incomplete": 2}
    assert st["rejected_files"][0]["reason"] == "not_hdf5"
    text = site.cli("status", check=False).stdout  # exit 3: no daemon ran, only a rescan
    assert "rejected (not_hdf5, 1x)" in text


def test_groups_filters(site: Site) -> None:
    site.cli(
        "simulate", "--out", str(site.incoming), "--groups", "3", "--nants", "4", "--nchan", "2"
    )
    site.cli("run", "--rescan")
    assert len(site.cli_json("groups", "--json", "--since", "2025-10-02T00:05:00")) == 2
    assert len(site.cli_json("groups", "--json", "--until", "2025-10-02T00:01:00")) == 1
    assert len(site.cli_json("groups", "--json", "--state", "complete")) == 3
    assert "complete" in site.cli("groups").stdout


def test_index_hdf5_command(site: Site, tmp_path: Path) -> None:
    site.cli(
        "simulate", "--out", str(tmp_path / "d"), "--groups", "1", "--nants", "4", "--nchan", "2"
    )
    db = tmp_path / "x.sqlite3"
    p = site.cli("index-hdf5", str(tmp_path / "d"), "--hdf5-db", str(db))
    (summary,) = [json.loads(ln) for ln in p.stderr.splitlines() if "index-hdf5.summary" in ln]
    assert summary["indexed"] == 16 and summary["groups_completed"] == 1 and db.exists()
    text = site.cli(
        "index-hdf5", str(tmp_path / "d"), "--hdf5-db", str(db), "--log-format", "console"
    )
    assert "0 indexed, 0 updated, 0 moved, 16 unchanged" in text.stderr


def error_of(p: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command off a terminal: a JSON ``cli.error``."""
    (line,) = p.stderr.strip().splitlines()
    rec = json.loads(line)
    assert rec["event"] == "cli.error" and rec["level"] == "error"
    return str(rec["error"])


def test_bad_config_exits_non_zero_with_one_clear_line(site: Site) -> None:
    site.config_path.write_text("[groups]\nexpected_subbands = -1\n")
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode == 1 and "expected_subbands" in error_of(p)
    # for a person (a terminal, or console format) the same line as text
    p = site.cli("run", "--rescan", "--log-format", "console", check=False)
    (line,) = p.stderr.strip().splitlines()
    assert p.returncode == 1 and line.startswith("dsa110-ingest: error:")
    assert "expected_subbands" in line and "Traceback" not in p.stderr


def test_missing_storage_location_fails_the_rescan_naming_it(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=1)
    site.config_path.write_text(
        site.config_path.read_text() + "[[storage_locations]]\n"
        'name = "x"\npath = "/nonexistent/x"\n'
    )
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode == 1
    assert "storage location x (/nonexistent/x) does not exist" in p.stderr
    assert '"indexed": 16' in p.stderr  # the other location was still backfilled


def test_events_json_lines(site: Site) -> None:
    site.cli(
        "simulate", "--out", str(site.incoming), "--groups", "1", "--nants", "4", "--nchan", "2"
    )
    site.cli("run", "--rescan")
    (line,) = site.cli("events", "--json").stdout.splitlines()
    e = json.loads(line)
    assert e["type"] == "group.complete" and len(e["payload"]["files"]) == 16


def test_unexpected_exception_is_a_structured_log_line_not_a_bare_traceback(site: Site) -> None:
    # a bug injected into a real command: main() must still end in one structured line
    code = (
        "import sys\n"
        "from dsa110_ingest import cli\n"
        "def boom(cfg, args):\n"
        "    raise RuntimeError('injected bug')\n"
        "cli.COMMANDS['status'].run = boom\n"
        "raise SystemExit(cli.main(sys.argv[1:]))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "status", "--log-format", "json"],
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    (line,) = p.stderr.strip().splitlines()
    rec = json.loads(line)
    assert rec["event"] == "cli.crashed" and rec["level"] == "error"
    assert rec["error"] == "RuntimeError: injected bug" and "please report" in rec["hint"]
    assert "injected bug" in rec["exception"]  # the traceback, inside the JSON
    assert not p.stderr.startswith("Traceback")


def test_run_refuses_to_start_without_its_converter_and_does_no_work(
    tmp_path: Path, sim_groups
) -> None:
    site = write_site(
        tmp_path, convert='[convert]\nbackend = "command"\ncommand = ["no-such-conv", "{output}"]\n'
    )
    sim_groups(site.incoming, n=1)
    for args in (("run",), ("run", "--rescan")):
        p = site.cli(*args, check=False, timeout=60)
        assert p.returncode == 1
        assert error_of(p).startswith("[convert] command: no-such-conv")
        assert not (site.root / "state" / "hdf5.sqlite3").exists()  # nothing indexed
    # index and group only: starts fine
    assert site.cli("run", "--rescan", "--no-convert").returncode == 0


def test_rescan_exits_1_when_a_conversion_it_ran_failed(tmp_path: Path, sim_groups) -> None:
    site = command_site(
        tmp_path / "site", converter_script(tmp_path / "bad", "sys.exit(7)"), "max_attempts = 1\n"
    )
    sim_groups(site.incoming, n=1)
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode == 1
    assert "1 conversion(s) failed in this rescan" in p.stderr.strip().splitlines()[-1]
    # a second rescan runs no conversion: the old failure is not this run's
    assert site.cli("run", "--rescan", check=False).returncode == 0


def test_retry_does_not_claim_a_daemon_that_is_not_running(tmp_path: Path, sim_groups) -> None:
    site = command_site(
        tmp_path / "site", converter_script(tmp_path / "bad", "sys.exit(7)"), "max_attempts = 1\n"
    )
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", check=False)
    (g,) = site.cli_json("groups", "--json")
    p = site.cli("retry", g["group_id"])
    assert "pending again" in p.stderr and "no daemon is running" in p.stderr
    assert "the running daemon" not in p.stderr and f"convert {g['group_id']}" in p.stderr
    again = site.cli("retry", g["group_id"])  # pending now: nothing to do, like convert
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_status_json_says_running_then_stopped(site: Site, daemon_factory) -> None:
    d = daemon_factory(site)
    d.wait_ready()
    wait_for(lambda: site.cli("status", check=False).returncode == 0, 60)
    st = site.cli_json("status", "--json")
    assert st["daemon"]["state"] == "running" and st["daemon"]["pid"] == d.proc.pid
    assert st["daemon"]["version"] == st["version"] == __version__
    text = site.cli("status").stdout
    assert "daemon:      running: pid" in text and f"version:     {__version__}" in text
    d.stop()
    p = site.cli("status", "--json", check=False)
    assert p.returncode == 3 and json.loads(p.stdout)["daemon"]["state"] == "stopped"
