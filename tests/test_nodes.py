"""Several nodes on one index: a daemon's locations are its node's, one daemon per node
name, and `status` lists every node. PostgreSQL cases share one real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dsa110_ingest.db import open_index_at

from .conftest import Site, wait_for, write_site
from .pg_server import PgDatabases


def with_node(site: Site, node: str, extra: str = "") -> Site:
    """The site's config with ``node`` (and any other top-level keys) in front."""
    text = site.config_path.read_text()
    site.config_path.write_text(f'node = "{node}"\n{extra}' + text)
    return site


def _error(p: subprocess.CompletedProcess[str]) -> str:
    """The error a command or daemon logged (a JSON line with an ``error``) on stderr."""
    for line in p.stderr.splitlines():
        if line.startswith("{") and "error" in (rec := json.loads(line)):
            return str(rec["error"])
    raise AssertionError(f"no error logged:\n{p.stderr}")


@pytest.mark.parametrize("nested", [False, True])
def test_a_location_of_another_node_is_refused_naming_both(tmp_path: Path, nested: bool) -> None:
    site = with_node(write_site(tmp_path), "ingest-a")
    theirs = os.path.realpath(site.incoming / "sub" if nested else site.incoming)
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db:
        db.ensure_location("bulk", theirs, "incoming", node="ingest-b")
    p = site.cli("run", "--rescan", "--no-convert", check=False)
    assert p.returncode == 1
    msg = _error(p)
    assert "node 'ingest-a'" in msg and "node 'ingest-b'" in msg, msg
    assert "'incoming'" in msg and "'bulk'" in msg and theirs in msg
    assert 'set `node = "ingest-b"`' in msg  # the fix for a replacement host
    with open_index_at(site.root / "state" / "hdf5.sqlite3", readonly=True) as db:
        assert [(loc.name, loc.node) for loc in db.locations()] == [("bulk", "ingest-b")]


def test_doctor_fails_a_location_of_another_node(tmp_path: Path) -> None:
    site = with_node(write_site(tmp_path), "ingest-a")
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db:
        db.ensure_location("bulk", os.path.realpath(site.incoming), "incoming", node="ingest-b")
    p = site.cli("doctor", check=False)
    assert p.returncode == 1
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("FAIL  node:")]
    assert "node 'ingest-b'" in line and "node 'ingest-a'" in line


def test_a_location_without_a_node_is_taken_over(tmp_path: Path, sim_groups) -> None:
    site = with_node(write_site(tmp_path), "ingest-a")
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db:
        lid = db.ensure_location("incoming", os.path.realpath(site.incoming), "incoming")
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    with open_index_at(site.root / "state" / "hdf5.sqlite3", readonly=True) as db:
        assert [(loc.id, loc.node) for loc in db.locations()] == [(lid, "ingest-a")]
        assert len(db.known_files(lid)) == 16


def test_status_lists_every_node(tmp_path: Path, daemon_factory) -> None:
    site = with_node(write_site(tmp_path), "ingest-a")
    with open_index_at(site.root / "state" / "hdf5.sqlite3") as db:
        db.write_heartbeat("ingest-old", 4242, "old-host", time.time() - 900,
                           time.time() - 600, {})  # fmt: skip
    d = daemon_factory(site)
    d.wait_ready()
    st = wait_for(
        lambda: (s := site.cli_json("status", "--json"))["daemon"]["state"] == "running" and s,
        60,
    )
    nodes = {n["node"]: n for n in st["nodes"]}
    assert set(nodes) == {"ingest-a", "ingest-old"} and st["node"] == "ingest-a"
    assert nodes["ingest-a"]["state"] == "running" and nodes["ingest-a"]["this_node"]
    assert nodes["ingest-a"]["pid"] == d.proc.pid
    assert nodes["ingest-old"]["state"] == "stopped" and not nodes["ingest-old"]["this_node"]
    assert nodes["ingest-old"]["heartbeat"]["hostname"] == "old-host"
    text = site.cli("status").stdout
    assert "nodes:       2" in text
    assert "ingest-a    running: pid" in text and "(this node)" in text
    assert "ingest-old  stopped: pid 4242 on old-host is gone" in text
    d.stop()
    p = site.cli("status", "--json", check=False)
    assert p.returncode == 3
    assert {n["node"]: n["state"] for n in json.loads(p.stdout)["nodes"]} == {
        "ingest-a": "stopped",
        "ingest-old": "stopped",
    }


def test_status_of_a_fresh_deployment_names_this_node(tmp_path: Path) -> None:
    site = with_node(write_site(tmp_path), "ingest-z")
    p = site.cli("status", "--json", check=False)
    st = json.loads(p.stdout)
    assert p.returncode == 3
    assert [(n["node"], n["state"]) for n in st["nodes"]] == [("ingest-z", "stopped")]


@pytest.mark.parametrize(
    ("process", "state"),
    [
        ("this namespace", "running"),
        ("another pid namespace", "stopped"),
        ("another boot", "stopped"),
        ("not recorded (an older release)", "running"),
    ],
)
def test_a_heartbeat_pid_counts_only_in_its_own_pid_namespace(
    tmp_path: Path, process: str, state: str
) -> None:
    """The lock file unreadable, `status` falls back to the heartbeat's pid: a live pid of
    that number here is this node's daemon only when the heartbeat was written in this
    boot and pid namespace (a container of the same host name has its own pid 1234)."""
    import socket

    from dsa110_ingest.db.records import Heartbeat
    from dsa110_ingest.nodes import node_state
    from dsa110_ingest.procs import this_process

    site = write_site(tmp_path)
    me = this_process().fields()
    ident = {
        "this namespace": me,
        "another pid namespace": {**me, "pidns": "4026530000"},
        "another boot": {**me, "boot": "00000000-1111-2222-3333-444444444444"},
        "not recorded (an older release)": None,
    }[process]
    now = time.time()
    status = {"phase": "running"} | ({"process": ident} if ident else {})
    hb = Heartbeat(site.cfg.node, os.getpid(), socket.gethostname(), now - 60, now - 1, status)
    st = node_state(None, site.cfg, site.cfg.node, hb, now)  # alive here: this very pid
    assert st["state"] == state, st


# -- PostgreSQL: nodes on different hosts see each other through the index ----------------
def pg_site(root: Path, dbs: PgDatabases, node: str, location: str, convert: str = "") -> Site:
    """A node's deployment on the shared PostgreSQL index: its own state dir and folder."""
    site = write_site(root, convert=convert or None)
    (root / location).mkdir(exist_ok=True)
    text = site.config_path.read_text().replace('path = "incoming"', f'path = "{location}"')
    site.config_path.write_text(
        f'node = "{node}"\nhdf5_db = "{dbs.index}"\nproducts_db = "{dbs.products}"\n' + text
    )
    return Site(root, site.config_path, root / location)


def node_lock_free(uri: str, node: str) -> bool:
    """Whether no live session holds ``node``'s lock (taken and given back at once)."""
    with open_index_at(uri, readonly=True) as db:
        if db.try_lock_node(node):
            db.unlock_node(node)
            return True
        return False


def test_one_daemon_per_node_name_across_hosts(
    tmp_path: Path, pg_dbs: PgDatabases, daemon_factory
) -> None:
    # two state dirs (two "hosts"): only the index can tell that the name is taken
    a = pg_site(tmp_path / "a", pg_dbs, "ingest-a", "in-a")
    a2 = pg_site(tmp_path / "a2", pg_dbs, "ingest-a", "in-a2")
    d = daemon_factory(a)
    d.wait_ready(60)
    p = a2.cli("run", check=False, timeout=60)
    assert p.returncode == 1
    msg = _error(p)
    assert "another daemon runs as node 'ingest-a'" in msg and f"pid {d.proc.pid}" in msg, msg
    # SIGKILL: the server drops the dead session's lock, the name is free again
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    wait_for(lambda: node_lock_free(pg_dbs.index, "ingest-a"), 30)
    d2 = daemon_factory(a2)
    d2.wait_ready(60)
    assert d2.stop() == 0


def test_doctor_and_status_on_a_postgresql_index(tmp_path: Path, pg_dbs: PgDatabases) -> None:
    a = pg_site(tmp_path / "a", pg_dbs, "ingest-a", "in-a")
    p = a.cli("doctor", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK    hdf5 db path: postgresql://" in p.stdout
    assert "OK    node: 'ingest-a'" in p.stdout
    st = a.cli_json("status", "--json")
    assert st["hdf5_db"].startswith("postgresql://") and st["node"] == "ingest-a"
    assert [(n["node"], n["state"]) for n in st["nodes"]] == [("ingest-a", "stopped")]


def test_status_sees_every_node_through_the_index(
    tmp_path: Path, pg_dbs: PgDatabases, daemon_factory
) -> None:
    a = pg_site(tmp_path / "a", pg_dbs, "ingest-a", "in-a")
    b = pg_site(tmp_path / "b", pg_dbs, "ingest-b", "in-b")
    da, db_ = daemon_factory(a), daemon_factory(b)
    da.wait_ready(60)
    db_.wait_ready(60)

    def states(site: Site) -> dict[str, str]:
        return {n["node"]: n["state"] for n in site.cli_json("status", "--json")["nodes"]}

    # from a's host: b runs (b's lock is held in the index, its heartbeat fresh)
    wait_for(lambda: states(a) == {"ingest-a": "running", "ingest-b": "running"}, 60)
    db_.proc.send_signal(signal.SIGKILL)
    db_.proc.wait(10)
    wait_for(lambda: states(a) == {"ingest-a": "running", "ingest-b": "stopped"}, 60)
    text = a.cli("status").stdout
    assert "ingest-b  stopped: pid" in text and "is gone" in text
    assert da.stop() == 0
