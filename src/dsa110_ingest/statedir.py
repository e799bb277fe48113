"""What the daemon keeps beside its databases: the single-instance lock, the event-id
floor that outlives the events table, and file modes that ignore the umask (also used
by the event mirror and the log file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from dsa110_ingest.errors import IngestError

DIR_MODE = 0o750
FILE_MODE = 0o640


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0750 whatever the umask; existing folders are
    left as they are (an operator may have widened them on purpose)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
            os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """Open (creating 0640 whatever the umask) and return the descriptor."""
    ensure_dir(path.parent)
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


class AlreadyRunningError(IngestError):
    pass


# the lock cannot be created: a folder this user may not write, or a read-only mount
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class StateLock:
    """An exclusive ``flock`` on ``<hdf5_db>.lock``, held for the daemon's life.

    The kernel drops it when the process dies (even by SIGKILL), so a stale lock file
    never blocks a restart. The pid inside is only for the message.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self.fd: int | None = None

    def acquire(self, what: str = "run") -> None:
        try:
            fd = open_private(self.path, os.O_RDWR)
        except OSError as e:
            if e.errno not in _NOT_WRITABLE:
                raise
            fix = (
                "remount it read-write or set `state_dir` elsewhere"
                if e.errno == errno.EROFS
                else f"make {self.path.parent} writable by this user"
            )
            raise IngestError(
                f"cannot create the lock file {self.path}: {e.strerror}; {fix} (the "
                "daemon's state lives there)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another dsa110-ingest (pid {holder}) is running on {self.path.with_suffix('')}"
                f"; `{what}` refuses to start beside it (stop it first, or use `status`)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def holder(self) -> int | None:
        """The pid of the daemon holding the lock (0: held, pid unknown); None: not held.
        Probing takes a shared lock for an instant, so it never blocks the daemon."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                text = os.pread(fd, 64, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class EventIdFloor:
    """The highest event id ever handed out, kept outside the HDF5 DB.

    If the DB (and with it the events table and its AUTOINCREMENT counter) is lost, the
    next daemon starts its ids above this floor, so a consumer resuming with
    ``events --after N`` misses nothing. A hidden file beside the DB: ``rm hdf5.sqlite3*``
    does not take it along.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(f".{db_path.name}.event-id-floor")
        self.value = self._read()

    def _read(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            return 0  # torn by a crash mid-write of an older version: the DB still knows

    def write(self, value: int) -> None:
        if value <= self.value:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.value = value
