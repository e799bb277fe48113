"""Shared fixtures: real files (h5py), real SQLite files, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.config import Config, load_config
from dsa110_ingest.db import IndexStore, ProductsStore, open_index_at, open_products_at
from dsa110_ingest.tools.simulate import SimParams, plan_groups, simulate, write_file

# a real PostgreSQL server for the postgresql backend's tests (fixtures pg_server, pg_dbs)
pytest_plugins = ("tests.pg_server",)

DATA = Path(__file__).parent / "data"
SMALL = SimParams(nants=4, nchan=2, ntimes=2)
# `dsa110-ingest simulate` options for the smallest valid files
TINY_SIM_ARGS = ("--nants", "2", "--nchan", "1", "--ntimes", "2")
# every store backend the backend-neutral DB tests run on (one parametrized fixture)
STORE_BACKENDS = ["sqlite", "postgresql"]


# -- one private temp folder per session, left empty -------------------------------------
# Every temp folder of the run (pytest's tmp_path, tempfile.* in tests, product code and the
# daemons it starts, which inherit TMPDIR) lands in a folder of this session's own, so
# other work on the machine cannot add to it. Whatever is still in it at the end, besides
# pytest's own tmp_path tree, was left behind by a test or the product: the run fails.
_TMP_KEY = pytest.StashKey[tuple[Path, str | None]]()
_TMP_LEFT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # a pytest-xdist worker: it inherits the controller's TMPDIR, which checks
    private = Path(tempfile.mkdtemp(prefix="dsa110-tests-", dir=tempfile.gettempdir()))
    # the PostgreSQL server's user (tests/pg_server.py) makes its folder in here too
    private.chmod(0o755)
    config.stash[_TMP_KEY] = (private, os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = str(private)
    tempfile.tempdir = None  # re-read TMPDIR on the next gettempdir()


def _left_in(private: Path) -> list[str]:
    out = []
    for entry in sorted(private.iterdir()):
        if entry.name.startswith("pytest-of-"):
            continue
        kind = "empty folder" if entry.is_dir() and not any(entry.iterdir()) else "entry"
        out.append(f"{entry} ({kind})")
    return out


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _TMP_KEY not in session.config.stash:
        return  # a pytest-xdist worker
    private, old = session.config.stash[_TMP_KEY]
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None
    left = _left_in(private)
    session.config.stash[_TMP_LEFT] = left
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif session.exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(private, ignore_errors=True)  # kept after a failure, for a look


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left = config.stash.get(_TMP_LEFT, [])
    if left:
        terminalreporter.write_line(
            f"FAILED: the run left {len(left)} files or folders in its temp folder (a test "
            "or the product creates a temp file or folder and never removes it; remove it "
            "where it is made):",
            red=True,
            bold=True,
        )
        for line in left[:50]:
            terminalreporter.write_line(f"  {line}", red=True)


# the files that take longest, started first: with `make test`'s two workers (one file
# whole on each) the run's tail is then short files, not the soak alone on one worker
LONGEST_FIRST = (
    "tests/reliability/test_soak.py",
    "tests/reliability/test_faults.py",
    "tests/convert/test_dask.py",
    "tests/reliability/test_fuzz.py",
    "tests/test_packaging.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    root = config.rootpath

    def key(item: pytest.Item) -> int:
        rel = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        return rank.get(rel, len(rank))

    items.sort(key=key)  # stable: every file keeps its own order


def store_target(request: pytest.FixtureRequest, backend: str, name: str) -> str | Path:
    """Where a test's fresh ``name`` database lives on ``backend`` (a path or a URI)."""
    if backend == "sqlite":
        tmp: Path = request.getfixturevalue("tmp_path")
        return tmp / f"{name}.sqlite3"
    if backend == "postgresql":
        # a real server (tests/pg_server.py); skipped, loudly, where it is not installed
        from tests.pg_server import pg_target

        return pg_target(request, name)
    raise AssertionError(f"no test database for backend {backend!r}; add it in store_target")


@pytest.fixture
def memory_index() -> Iterator[IndexStore]:
    """A private in-memory SQLite index through the factory: for fast unit tests."""
    with open_index_at(":memory:") as db:
        yield db


@pytest.fixture(params=STORE_BACKENDS)
def index_store(request: pytest.FixtureRequest) -> Iterator[IndexStore]:
    """A fresh, migrated index store on each backend of STORE_BACKENDS."""
    with open_index_at(store_target(request, request.param, "hdf5")) as db:
        yield db


@pytest.fixture(params=STORE_BACKENDS)
def products_store(request: pytest.FixtureRequest) -> Iterator[ProductsStore]:
    """A fresh, migrated products store on each backend of STORE_BACKENDS."""
    with open_products_at(store_target(request, request.param, "products")) as db:
        yield db


@dataclass
class Site:
    """A throw-away deployment: config file, state dir, storage locations."""

    root: Path
    config_path: Path
    incoming: Path
    extra: dict[str, Path] = field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        return load_config(self.config_path, env={"HOME": str(self.root)})

    def db(self, readonly: bool = False) -> IndexStore:
        return open_index_at(self.cfg.hdf5_db, readonly=readonly)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.pop("HDF5_DB_PATH", None)
        env.pop("PRODUCTS_DB_PATH", None)
        env["DSA110_INGEST_CONFIG"] = str(self.config_path)
        env["HOME"] = str(self.root)
        env.update(extra)
        return env

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "dsa110_ingest", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def cli_json(self, *args: str) -> Any:
        # `status` exits 3/4 when the daemon is stopped/stale; its JSON is still the answer
        ok = (0, 3, 4) if args[:1] == ("status",) else (0,)
        p = self.cli(*args, check=False)
        if p.returncode not in ok:
            raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout)

    def events(self) -> list[dict[str, Any]]:
        out = self.cli("events").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def write_site(
    root: Path,
    *,
    extra_locations: tuple[str, ...] = (),
    toml_extra: str = "",
    watch: str = "auto",
    convert: str | None = None,
    databases: tuple[str | Path, str | Path] | None = None,
) -> Site:
    """``databases``: (hdf5_db, products_db) to configure instead of the state_dir files."""
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    locs = [f'[[storage_locations]]\nname = "incoming"\npath = "incoming"\nwatch = "{watch}"\n']
    extra = {}
    for name in extra_locations:
        (root / name).mkdir(exist_ok=True)
        extra[name] = root / name
        locs.append(f'[[storage_locations]]\nname = "{name}"\npath = "{name}"\nwatch = "{watch}"\n')
    conv = convert if convert is not None else "[convert]\nenabled = false\n"
    dbs = f'hdf5_db = "{databases[0]}"\nproducts_db = "{databases[1]}"\n' if databases else ""
    text = (
        'state_dir = "state"\nlog_level = "debug"\n'
        + dbs
        + "\n".join(locs)
        + "\n[watch]\nsettle_seconds = 0.5\npoll_interval_seconds = 0.25\n"
        + "incomplete_check_seconds = 0.2\n"
        + conv
        + "\n"
        + toml_extra
    )
    cfg = root / "ingest.toml"
    cfg.write_text(text)
    return Site(root, cfg, incoming, extra)


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    """A deployment on SQLite files; in a module marked ``store_backends``, once per
    backend of STORE_BACKENDS (pytest_generate_tests below)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return write_site(tmp_path)
    dbs = (store_target(request, backend, "hdf5"), store_target(request, backend, "products"))
    return write_site(tmp_path, databases=dbs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "site" in metafunc.fixturenames and metafunc.definition.get_closest_marker("store_backends"):
        metafunc.parametrize("site", STORE_BACKENDS, indirect=True)


@pytest.fixture
def sim_groups() -> Callable[..., list[Path]]:
    """Write N small groups into a folder; returns the paths written, oldest first."""

    def make(
        out: Path,
        n: int = 2,
        start: str = "2025-10-02T00:00:00",
        jitter: float = 2.0,
        missing: tuple[int, ...] = (),
        params: SimParams = SMALL,
        mode: str = "inplace",
    ) -> list[Path]:
        written: list[Path] = []
        simulate(
            out, n, start, jitter, params=params, missing=missing, mode=mode, on_file=written.append
        )
        return written

    return make


class Daemon:
    """``dsa110-ingest run`` as a real child process."""

    def __init__(self, site: Site, *args: str, **env: str) -> None:
        self.site = site
        self.log = site.root / f"daemon-{time.monotonic_ns()}.log"
        self._logf = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dsa110_ingest", "run", *args],
            env=site.env(**env),
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            cwd=site.root,
        )

    # a deadline, not a sleep: start-up imports h5py, numba and a reader process, which on
    # two cores shared with other work has taken over 30 s
    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(
            lambda: "service.ready" in self.log.read_text(),
            timeout,
            lambda: f"daemon not ready:\n{self.log.read_text()}",
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._logf.close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._logf.close()

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(site: Site, *args: str, **env: str) -> Daemon:
        d = Daemon(site, *args, **env)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.kill()


def wait_for(
    pred: Callable[[], Any], timeout: float = 20, msg: Callable[[], str] | str = "condition not met"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(msg() if callable(msg) else msg)


def converter_script(path: Path, body: str = "") -> Path:
    """A stand-in site converter: writes <output>/inputs.txt listing its inputs; ``body``
    runs first (sleep, fail, record its pid ...)."""
    path.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys, time
        out, inputs = sys.argv[1], sys.argv[2:]
        print("converting", len(inputs), "files into", out)
        {body}
        os.makedirs(out)
        with open(os.path.join(out, "inputs.txt"), "w") as f:
            f.write("\\n".join(inputs))
    """)
    )
    path.chmod(0o755)
    return path


def hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding a SQLite write lock on ``db``; returns once it holds it."""
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, time\n"
                f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
                f"time.sleep({seconds})\n"
                "c.execute('COMMIT')\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def run_without_dac(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python code as the daemon's user would be: without root's right to ignore file
    modes (as root, drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH with setpriv)."""
    import shutil

    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop DAC capabilities")
        argv = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def db_count(db_path: Path, sql: str, args: tuple[Any, ...] = ()) -> int:
    import sqlite3

    if not db_path.exists():
        return 0
    c = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(c.execute(sql, args).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        c.close()


__all__ = [
    "DATA",
    "SMALL",
    "TINY_SIM_ARGS",
    "Daemon",
    "Site",
    "db_count",
    "plan_groups",
    "wait_for",
    "write_file",
    "write_site",
]
