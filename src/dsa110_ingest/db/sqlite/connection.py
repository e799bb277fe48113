"""Opening SQLite the same way for both databases: WAL, busy timeout, foreign keys."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

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
    if "readonly" in msg or "read-only" in msg:
        return DatabaseReadOnlyError(
            f"database {path} is read-only while {doing}; make the file and its folder "
            "writable by the daemon's user"
        )
    return DatabaseError(f"database {path}: {e} (while {doing})")


def connect(
    path: Path | str, *, readonly: bool = False, busy_timeout_s: float = BUSY_TIMEOUT_S
) -> sqlite3.Connection:
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
        uri = f"file:{path}?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    else:
        _create_file(path)
        conn = sqlite3.connect(
            str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            _set_wal(conn, path)
            # FULL: a committed group.complete event survives power loss, not only SIGKILL
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
    except sqlite3.Error as e:
        conn.close()
        raise translate(e, path, "opening") from None
    return conn


@retry(
    retry=retry_if_exception_type(sqlite3.OperationalError),
    stop=stop_after_delay(60),
    wait=wait_exponential(0.05, max=2),
    reraise=True,
)
def _set_wal(conn: sqlite3.Connection, path: Path) -> None:
    # switching to WAL needs a moment of exclusive access; another opener may hold it
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise DatabaseError(
            f"database {path} cannot use WAL journaling (got {mode}); "
            "is it on a network filesystem? Move it to a local disk"
        )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, path: Path | str, doing: str) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: writers queue up front instead of failing mid-way."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise translate(e, path, doing) from None
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, path, doing) from None
        raise


def backup(conn: sqlite3.Connection, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    _create_file(dest)
    out = sqlite3.connect(str(dest))
    try:
        conn.backup(out)
    finally:
        out.close()
