"""The command line as an operator runs it: real processes, real files, real DBs."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Site


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
    text = site.cli("status").stdout
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
    assert "16 indexed" in p.stderr and db.exists()


def test_bad_config_exits_non_zero_with_one_clear_line(site: Site) -> None:
    site.config_path.write_text("[groups]\nexpected_subbands = -1\n")
    p = site.cli("run", "--rescan", check=False)
    assert p.returncode == 1
    assert p.stderr.startswith("dsa110-ingest: error:") and "expected_subbands" in p.stderr
    assert "Traceback" not in p.stderr


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
