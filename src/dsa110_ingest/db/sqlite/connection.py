"""Opening SQLite the same way for both databases: WAL, busy timeout, foreign keys.

Durability: a connection opened with ``durable_tables`` (the HDF5 index: its ``events``)
runs at ``synchronous = NORMAL`` and makes exactly the transactions that wrote one of
those tables durable, by syncing the WAL after their COMMIT; every other connection runs
at ``synchronous = FULL``. See docs/database.md ("Durability") for why this is as safe
as FULL for everything that is promised to a consumer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import weakref
from collections.abc import Iterator
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential
from tenacity import retry_if_exception as _retry_if

from dsa110_ingest.errors import DatabaseBusyError, DatabaseError, DatabaseReadOnlyError

BUSY_TIMEOUT_S = 10.0
# a private database that lives as long as its connection (fast unit tests)
MEMORY = ":memory:"
DB_FILE_MODE = 0o640
DB_DIR_MODE = 0o750


def _create_file(path: Path) -> None:
    """Create the DB file with mode 0640 before SQLite does (SQLite copies the mode to
    the -wal/-shm files, and its own default would follow a permissive umask)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=DB_DIR_MODE)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, DB_FILE_MODE)
        os.close(fd)
    except FileExistsError:
        pass
    except PermissionError as e:
        raise DatabaseReadOnlyError(
            f"cannot create database {path}: {e.strerror}; make {path.parent} writable by "
            "this user or point the path elsewhere (HDF5_DB_PATH / PRODUCTS_DB_PATH)"
        ) from None
    except OSError as e:
        if e.errno == errno.EROFS:
            raise DatabaseReadOnlyError(
                f"cannot create database {path}: read-only filesystem; put the state "
                "directory on a writable local disk"
            ) from None
        raise DatabaseError(f"cannot create database {path}: {e}") from None


def translate(e: sqlite3.Error, path: Path | str, doing: str) -> DatabaseError:
    msg = str(e).lower()
    if "locked" in msg or "busy" in msg:
        return DatabaseBusyError(
            f"database {path} stayed locked by another process while {doing}; it is "
            "retried. If this persists, find the holder with `fuser "
            f"{path}`"
        )
    if "disk is full" in msg:
        return DatabaseError(
            f"database {path}: {e} while {doing}; free space on the filesystem holding "
            f"{Path(path).parent} (`df -h {Path(path).parent}`); the work is kept and retried"
        )
    if "readonly" in msg or "read-only" in msg:
        return DatabaseReadOnlyError(
            f"database {path} is read-only while {doing}; make the file and its folder "
            "writable by the daemon's user"
        )
    return DatabaseError(f"database {path}: {e} (while {doing})")


class Connection(sqlite3.Connection):
    """A connection that knows which of its tables' writes must survive power loss.

    In WAL mode, ``synchronous = NORMAL`` commits without syncing the WAL (a power loss
    may take the last transactions, never consistency) and FULL syncs it at every
    commit. SQLite refuses to change the level inside a transaction, and whether a
    transaction writes an event is only known at its end; so the connection stays at
    NORMAL and a TEMP trigger on each durable table raises :attr:`must_sync`, which
    :func:`transaction` honours after the COMMIT by syncing the WAL file itself: what
    FULL would have done for that commit. That sync also makes every earlier frame of
    the WAL durable, so nothing committed before an event can be lost while the event
    is kept.
    """

    durable_tables: tuple[str, ...] = ()
    db_path: Path | None = None
    must_sync = False
    _armed_at = -1  # main's schema_version when the triggers were (re)created

    def arm(self) -> None:
        """(Re)create the triggers on the durable tables that exist; a migration that
        rebuilds a table drops its triggers, hence the check of the schema version."""
        if not self.durable_tables:
            return
        version = int(self.execute("PRAGMA main.schema_version").fetchone()[0])
        if version == self._armed_at:
            return
        have = {
            r[0]
            for r in self.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name IN "
                f"({','.join('?' * len(self.durable_tables))})",
                self.durable_tables,
            )
        }
        for table in sorted(have):
            for op in ("INSERT", "UPDATE", "DELETE"):
                self.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS durable_{table}_{op.lower()} "
                    f"AFTER {op} ON main.{table} BEGIN SELECT dsa110_must_sync(); END"
                )
        # a table still missing (a fresh DB, before its migrations) is armed later
        self._armed_at = version if have == set(self.durable_tables) else -1

    def sync_wal(self) -> None:
        """fdatasync the WAL, as ``synchronous = FULL`` does at a commit. fsync is per
        file, not per descriptor: our own descriptor flushes SQLite's writes."""
        self.must_sync = False
        assert self.db_path is not None
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # no WAL (checkpointed and removed): the commit is in the main file
            fd = os.open(self.db_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def _flag_sync(conn: Connection) -> None:
    # the SQL function the triggers call; weak, or the connection would hold itself
    ref = weakref.ref(conn)

    def must_sync() -> None:
        c = ref()
        if c is not None:
            c.must_sync = True

    conn.create_function("dsa110_must_sync", 0, must_sync)


def connect(
    path: Path | str,
    *,
    readonly: bool = False,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    durable_tables: tuple[str, ...] = (),
) -> sqlite3.Connection:
    """``durable_tables``: writes to these tables are synced at their commit, every
    other write is left to the next checkpoint (see :class:`Connection`); empty: every
    commit is synced (``synchronous = FULL``)."""
    if str(path) == MEMORY:
        conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    path = Path(path)
    if readonly:
        if not path.exists():
            raise DatabaseError(
                f"database {path} does not exist; run the daemon or "
                "`dsa110-ingest index-hdf5` first"
            )
        conn = _open_readonly(path, busy_timeout_s)
    else:
        _create_file(path)
        conn = sqlite3.connect(
            str(path),
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
            factory=Connection,
        )
        assert isinstance(conn, Connection)
        conn.db_path = path
        conn.durable_tables = durable_tables
        _flag_sync(conn)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            _set_wal(conn, path)
            # FULL: a committed group.complete event survives power loss, not only SIGKILL;
            # with durable tables only their commits are synced (Connection)
            level = "NORMAL" if durable_tables else "FULL"
            conn.execute(f"PRAGMA synchronous = {level}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
    except sqlite3.Error as e:
        conn.close()
        raise translate(e, path, "opening") from None
    return conn


def _open_readonly(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A read-only connection, also for a user who may read the DB but not write in its
    folder (the 0750/0640 modes' group). SQLite opens a WAL database read-only only if
    its -shm file exists or can be created: once the daemon has stopped and removed it,
    such a user reads the file as immutable, which is exact while no WAL is left over."""

    def open_(flags: str) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{path}?mode=ro{flags}",
            uri=True,
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )

    conn = open_("")
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.Error as e:
        conn.close()
        # only a folder the -shm file cannot be made in is read another way; anything
        # else (not a database, damaged) is said as it is
        if not isinstance(e, sqlite3.OperationalError) or os.access(path.parent, os.W_OK):
            raise translate(e, path, "opening read-only") from None
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise DatabaseReadOnlyError(
            f"database {path} cannot be read by this user: its last writer stopped without "
            f"folding {wal.name} into it, and reading that needs write access to "
            f"{path.parent}. Start the daemon (it folds the WAL in at start-up), or run "
            "this as the daemon's user"
        )
    # nobody writes (a writer would have made the -shm file): a short read of the file
    # as it is, never a wait on locks that no one can take
    return open_("&immutable=1")


def _wal_switch_contended(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


@retry(
    retry=retry_if_exception_type(sqlite3.OperationalError) & _retry_if(_wal_switch_contended),
    stop=stop_after_delay(60),
    wait=wait_exponential(0.05, max=2),
    reraise=True,
)
def _set_wal(conn: sqlite3.Connection, path: Path) -> None:
    # switching to WAL needs a moment of exclusive access; another opener may hold it.
    # Anything else (a folder where the -wal file cannot be made) will not pass by waiting
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.OperationalError as e:
        if _wal_switch_contended(e) or os.access(path.parent, os.W_OK):
            raise
        raise DatabaseReadOnlyError(
            f"database {path}: its folder {path.parent} is not writable by this user, and "
            f"SQLite needs to create {path.name}-wal and -shm there; make the folder "
            "writable by the daemon's user"
        ) from None
    if mode.lower() != "wal":
        raise DatabaseError(
            f"database {path} cannot use WAL journaling (got {mode}); "
            "is it on a network filesystem? Move it to a local disk"
        )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, path: Path | str, doing: str) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: writers queue up front instead of failing mid-way.
    A transaction that wrote a durable table is synced to disk before this returns."""
    durable = isinstance(conn, Connection) and bool(conn.durable_tables)
    if durable and conn.must_sync:  # a durable write made outside a transaction
        _sync(conn, path, doing)
    try:
        if durable:
            conn.arm()
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise translate(e, path, doing) from None
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if durable:
            conn.must_sync = False
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, path, doing) from None
        raise
    if durable and conn.must_sync:
        _sync(conn, path, doing)


def _sync(conn: Connection, path: Path | str, doing: str) -> None:
    try:
        conn.sync_wal()
    except OSError as e:
        raise DatabaseError(
            f"database {path}: committed, but syncing its WAL to disk failed ({e}) while "
            f"{doing}; the disk may be failing: check `dmesg` and the filesystem"
        ) from None


def backup(conn: sqlite3.Connection, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    _create_file(dest)
    out = sqlite3.connect(str(dest))
    try:
        conn.backup(out)
    finally:
        out.close()
