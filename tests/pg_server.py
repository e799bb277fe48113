"""A real PostgreSQL server for the tests (and the benchmarks): one per session.

``initdb`` + ``pg_ctl`` into a private folder under the system temp dir, reachable only
through a unix socket in that folder (no TCP port). The server refuses to run as root, so
as root every server command runs as the ``postgres`` user through ``runuser``; as
another user it runs as that user. A small reaper process stops the server if the
process that started it dies without stopping it (pytest SIGKILLed by a CI timeout), so
no postmaster outlives a run.

No binaries at all: the PostgreSQL tests are skipped with one loud line (unless
``DSA110_REQUIRE_POSTGRES=1``, as in CI). Binaries present but the server does not
start: :class:`PgServerError`, and the tests that need it fail.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "DSA110_REQUIRE_POSTGRES"
SERVER_USER = "postgres"
TEMPLATES = {"index": "dsa110_index_template", "products": "dsa110_products_template"}
_BINARIES = ("initdb", "pg_ctl", "postgres")


class PgServerError(RuntimeError):
    """The binaries are there but the server could not be set up."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH first, then Debian's layout
    (newest major version)."""
    found = [shutil.which(b) for b in _BINARIES]
    if all(found):
        return Path(os.path.realpath(str(found[0]))).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        if all((Path(d) / b).exists() for b in _BINARIES):
            return Path(d)
    return None


def _major(bindir: str) -> int:
    try:
        return int(Path(bindir).parent.name)
    except ValueError:
        return 0


def missing_message() -> str:
    return (
        "POSTGRESQL TESTS SKIPPED: no initdb/pg_ctl/postgres on PATH or in "
        "/usr/lib/postgresql/*/bin; install Debian's postgresql-15 to run them "
        f"({REQUIRE_ENV}=1 turns this into a failure, as in CI)"
    )


@dataclass
class PgServer:
    root: Path
    bindir: Path
    as_user: list[str]
    durable: bool
    options: tuple[str, ...] = ()
    reaper: subprocess.Popen[bytes] | None = None
    postmaster_pid: int | None = None
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def version(self) -> str:
        """e.g. ``15.18``"""
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        words = out.split()
        return words[2] if len(words) > 2 else "unknown"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def uri(self, dbname: str) -> str:
        return f"postgresql:///{dbname}?host={self.socket_dir}&user={SERVER_USER}"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, cwd="/"
        )

    def start(self) -> None:
        initdb = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SERVER_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if initdb.returncode != 0:
            raise PgServerError(
                f"initdb into {self.data} failed ({initdb.returncode}): {initdb.stderr.strip()}"
            )
        opts = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.socket_dir}'",
            "-c max_connections=200",
            # one server per run, thrown away after it: durability buys the tests nothing
            *([] if self.durable else ["-F", "-c full_page_writes=off"]),
            *self.options,
        ]
        start = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "120",
            "-o",
            " ".join(opts),
            "start",
        )
        self.postmaster_pid = self._read_pid()
        if start.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgServerError(
                f"PostgreSQL in {self.data} did not start ({start.returncode}): "
                f"{start.stderr.strip()} {start.stdout.strip()}\nserver log:\n{log}"
            )
        self.reaper = _start_reaper(self)

    def _read_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server and remove its folder; makes sure the postmaster is gone."""
        pid = self.postmaster_pid or self._read_pid()
        if (self.data / "postmaster.pid").exists():
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                "stop", timeout=60,
            )  # fmt: skip
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.reaper is not None and self.reaper.poll() is None:
            self.reaper.kill()
            self.reaper.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -------------------------------------------------------------------
    def admin(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(self.uri(dbname), autocommit=True)

    def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        tmpl = f" TEMPLATE {template}" if template else ""
        with self.admin() as c:
            c.execute(f"CREATE DATABASE {name}{tmpl}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_REAPER = """
import os, shutil, subprocess, sys, time
parent, pg_ctl, data, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
as_user = sys.argv[5:]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(0.5)
subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
               capture_output=True, timeout=60)
shutil.rmtree(root, ignore_errors=True)
"""


def _start_reaper(server: PgServer) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _REAPER,
            str(os.getpid()),
            str(server.bindir / "pg_ctl"),
            str(server.data),
            str(server.root),
            *server.as_user,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of our process group, which is the point
    )


def start_server(*, durable: bool = False, options: tuple[str, ...] = ()) -> PgServer:
    """A running server in a fresh temp folder; raises PgServerError when it cannot run.
    ``durable``: fsync on, as in production (benchmarks); ``options``: more ``-c`` settings."""
    bindir = find_bindir()
    if bindir is None:
        raise PgServerError(missing_message())
    as_user: list[str] = []
    base = Path(tempfile.gettempdir())
    if os.geteuid() == 0 and not _reachable_by_all(base):
        base = Path("/tmp")  # TMPDIR under root's home: the postgres user cannot get there
    root = Path(tempfile.mkdtemp(prefix="dsa110-pg-", dir=base))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            pw = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PgServerError(
                f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as "
                "(the server refuses root); install Debian's postgresql package, which "
                "creates it"
            ) from None
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            raise PgServerError("running as root without runuser (util-linux) to drop to postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = [runuser, "-u", SERVER_USER, "--"]
    # the server's user must reach the folder (mkdtemp makes it 0700 for us alone)
    root.chmod(0o700 if not as_user else 0o755)
    server = PgServer(root, bindir, as_user, durable, options)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def _reachable_by_all(folder: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in (folder, *folder.parents))


def make_templates(server: PgServer) -> None:
    """The templates test databases are cloned from (a clone is much faster than running
    the migrations again): one per store, migrated by the backend's own code."""
    from dsa110_ingest.db.postgres.schema import migrate_database

    with server.admin() as c:
        for store, name in TEMPLATES.items():
            c.execute(f"CREATE DATABASE {name}")
            migrate_database(server.uri(name), store)
    # a clone would inherit the template's index identity: two test indexes would be
    # one index to an output_dir's claim. Without the row, each makes its own at first use
    with server.admin(TEMPLATES["index"]) as t:
        t.execute("DELETE FROM meta")


# -- pytest fixtures (imported by tests/conftest.py) ---------------------------------------
_missing_reported: list[str] = []


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if find_bindir() is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(missing_message().replace("SKIPPED", "REQUIRED BUT MISSING"))
        _missing_reported.append(missing_message())
        pytest.skip(missing_message())
    server = start_server()
    try:
        make_templates(server)
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class PgDatabases:
    index: str  # URI of a migrated, empty index database
    products: str  # URI of a migrated, empty products database


@pytest.fixture(scope="session")
def _pg_session_dbs(pg_server: PgServer) -> PgDatabases:
    return PgDatabases(
        *(pg_server.uri(pg_server.create_database(f"t_{s}", TEMPLATES[s])) for s in TEMPLATES)
    )


@pytest.fixture
def pg_dbs(pg_server: PgServer, _pg_session_dbs: PgDatabases) -> PgDatabases:
    """Migrated, empty index and products databases for one test.

    One pair per session, emptied before each test: connections left by the previous
    test (a store it did not close, a SIGKILLed daemon's backend) are ended, then every
    table but ``schema_migrations`` is truncated and the id sequences restarted. That is
    ~0.1 s where ``CREATE DATABASE ... TEMPLATE`` takes ~0.7 s on a loaded machine. A test
    that changes the schema itself takes its own database from
    ``pg_server.create_database(prefix, TEMPLATES[store])`` instead."""
    for uri in (_pg_session_dbs.index, _pg_session_dbs.products):
        reset_database(uri)
    return _pg_session_dbs


def reset_database(uri: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = [
            r[0]
            for r in c.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'"
            )
        ]
        if tables:
            c.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _missing_reported:
        terminalreporter.write_line(_missing_reported[0], red=True, bold=True)


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def pg_target(request: pytest.FixtureRequest, name: str) -> str:
    """The URI of a test's fresh ``name`` database (``store_target`` in conftest.py):
    ``hdf5`` and ``products`` are the test's emptied pair, any other name a database of
    its own cloned from the store's template (``products*``: products, else index)."""
    if name in ("hdf5", "products"):
        dbs: PgDatabases = request.getfixturevalue("pg_dbs")
        return dbs.index if name == "hdf5" else dbs.products
    server: PgServer = request.getfixturevalue("pg_server")
    store = "products" if name.startswith("products") else "index"
    db = server.create_database(f"t_{store}", TEMPLATES[store])
    request.addfinalizer(lambda: server.drop_database(db))
    return server.uri(db)
