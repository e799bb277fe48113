"""The test server itself: starts, gives fresh databases, and never outlives the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.pg_server import (
    TEMPLATES,
    PgDatabases,
    PgServer,
    PgServerError,
    find_bindir,
    start_server,
    wait_gone,
)

needs_binaries = pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL binaries")


def _version(uri: str) -> int:
    import psycopg

    with psycopg.connect(uri) as c:
        return int(c.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])


def test_each_test_gets_fresh_migrated_databases(pg_dbs: PgDatabases) -> None:
    import psycopg

    assert pg_dbs.index != pg_dbs.products
    assert _version(pg_dbs.index) >= 1 and _version(pg_dbs.products) >= 1
    with psycopg.connect(pg_dbs.index) as c:
        assert c.execute("SELECT COUNT(*) FROM hdf5_file_index").fetchone()[0] == 0
        c.execute("INSERT INTO meta VALUES ('left', 'behind')")
    leftover = psycopg.connect(pg_dbs.index)  # the next test's reset must end it
    leftover.execute("SELECT 1 FROM meta")
    with psycopg.connect(pg_dbs.products) as c:
        assert c.execute("SELECT to_regclass('hdf5_file_index')").fetchone()[0] is None


def test_what_a_test_wrote_is_gone_in_the_next(pg_server: PgServer, pg_dbs: PgDatabases) -> None:
    import psycopg

    # runs after the test above, which left a meta row and an open connection behind
    for uri in (pg_dbs.index, pg_server.uri(TEMPLATES["index"])):
        with psycopg.connect(uri) as c:
            assert c.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0


@needs_binaries
def test_stop_leaves_no_process_and_no_folder() -> None:
    server = start_server()
    pid = server.postmaster_pid
    assert pid is not None and wait_gone(pid, timeout=0.1) is False
    server.stop()
    assert wait_gone(pid), f"postmaster {pid} still running after stop()"
    assert not server.root.exists()


@needs_binaries
def test_a_server_that_cannot_start_raises_and_cleans_up(tmp_path: Path) -> None:
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("dsa110-pg-*"))
    with pytest.raises(PgServerError, match="did not start"):
        start_server(options=("-c shared_buffers=not-a-size",))
    after = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("dsa110-pg-*"))
    assert after <= before


@needs_binaries
def test_server_of_a_killed_run_is_reaped(tmp_path: Path) -> None:
    """pytest SIGKILLed (a CI timeout) must not leave a postmaster behind."""
    code = textwrap.dedent(
        """
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from tests.pg_server import start_server
        s = start_server()
        print(s.postmaster_pid, s.root, flush=True)
        time.sleep(600)
        """
    )
    root = Path(__file__).resolve().parents[1]
    p = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        pid_s, folder = p.stdout.readline().split()
        pid = int(pid_s)
        assert not wait_gone(pid, timeout=0.1)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert wait_gone(pid, timeout=60), f"postmaster {pid} outlived its killed starter"
    assert not Path(folder).exists()


_NO_BINARIES_CONFTEST = """
import tests.pg_server as server
server.find_bindir = lambda: None  # as on a machine without PostgreSQL
pytest_plugins = ("tests.pg_server",)
"""


def test_without_binaries_only_pg_tests_skip_loudly_unless_required(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(_NO_BINARIES_CONFTEST)
    (tmp_path / "test_x.py").write_text(
        "def test_on_pg(pg_dbs):\n    pass\n\n\ndef test_plain():\n    pass\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "DSA110_REQUIRE_POSTGRES"}
    env["PYTHONPATH"] = str(root)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # hypothesis & co: not needed, slow to load
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull]
    run = subprocess.run(
        [*argv, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout
    assert run.stdout.count("POSTGRESQL TESTS SKIPPED") >= 1
    # CI sets DSA110_REQUIRE_POSTGRES=1: a missing server is a failed run, never a green skip
    env["DSA110_REQUIRE_POSTGRES"] = "1"
    ci = subprocess.run(
        [*argv, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ci.returncode != 0
    assert "REQUIRED BUT MISSING" in ci.stdout
