"""When a file is finished though its writer gave no closing event.

A hard link into a folder (``ln``) shows only an IN_CREATE; :func:`finished_link` tells
a finished file linked in from a writer's new, still open file. Writers with no signal
at all (polling, a writer that never closes) are judged by :class:`Settler`: size and
mtime held still for ``settle_seconds``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable


def open_for_writing(path: str) -> bool | None:
    """Whether any process has ``path`` open for writing; None when we cannot tell.

    The kernel refuses a read lease (EAGAIN) while any writer holds the inode open, through
    any of its links. The lease is dropped at once, and no F_SETOWN means a writer that
    opens it meanwhile sends us no signal: it waits only for those few microseconds.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        # EAGAIN: a writer has it open. EACCES/EPERM: not our file and no CAP_LEASE;
        # EINVAL: no leases on this filesystem (NFS), or leases disabled by sysctl
        return True if e.errno in (errno.EAGAIN, errno.EBUSY) else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def finished_link(path: str) -> os.stat_result | None:
    """A name that just appeared (IN_CREATE): was a finished file linked in (``ln``)?

    A writer's new file appears empty and open for writing, and its close finishes it. A
    name that appears already holding data that no process has open for writing was
    made elsewhere and linked in: ``ln`` (the inode has other links), ``ln`` then ``rm``
    of the original before we looked (one link left), an O_TMPFILE linked into place
    after its close. It is finished if its size and mtime also hold during the check.
    Symlinks are not followed here: they wait for the settle time. Returns the file's
    stat when it is finished, else None.
    """
    try:
        before = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(before.st_mode) or before.st_size == 0:
        return None
    if open_for_writing(path) is not False:
        return None
    try:
        after = os.lstat(path)
    except OSError:
        return None
    same = (before.st_ino, before.st_size, before.st_mtime_ns) == (
        after.st_ino,
        after.st_size,
        after.st_mtime_ns,
    )
    return after if same else None


class Settler:
    """Files seen changing; each is ready once size and mtime hold still long enough.

    A file already taken as finished at its IN_CREATE (:func:`finished_link`) may still
    have its writer's IN_MODIFY events queued behind it: when the handler runs late (a
    loaded node), a file written in place can be whole and closed by the time its
    creation is handled. Those events describe writes that the file we took already
    holds, so a change that leaves the file as it was taken is not tracked
    (:meth:`taken`); its IN_CLOSE_WRITE, further down the queue, finishes it again.
    """

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int, float]] = {}
        # path -> (inode, size, mtime) it was taken with, and when
        self._taken: dict[str, tuple[tuple[int, int, int], float]] = {}

    def taken(self, path: str, st: os.stat_result) -> None:
        """``path`` was taken as finished in the state ``st``."""
        with self._lock:
            self._files.pop(path, None)
            self._taken[path] = ((st.st_ino, st.st_size, st.st_mtime_ns), self.clock())

    def touch(self, path: str) -> None:
        # the settle clock starts at this change, not at the next check
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock:
            was = self._taken.pop(path, None)
            if was is not None and was[0] == (st.st_ino, st.st_size, st.st_mtime_ns):
                self._taken[path] = was  # a write the file already held when taken
                return
            self._files[path] = (st.st_size, st.st_mtime_ns, self.clock())

    def forget(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)
            self._taken.pop(path, None)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest tracked file could be ready (None: none tracked)."""
        with self._lock:
            if not self._files:
                return None
            first = min(since for _, _, since in self._files.values())
        return max(0.0, first + self.settle_s - self.clock())

    def due(self) -> list[str]:
        now = self.clock()
        out: list[str] = []
        with self._lock:
            items = list(self._files.items())
            # a late event of a taken file arrives within the handler's lag, far less
            # than the settle time; after that the record only costs memory
            for path in [p for p, (_, at) in self._taken.items() if now - at > self.settle_s]:
                del self._taken[path]
        for path, (size, mtime, since) in items:
            try:
                st = os.stat(path)
            except OSError:
                self.forget(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                with self._lock:
                    if path in self._files:
                        self._files[path] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= self.settle_s:
                self.forget(path)
                out.append(path)
        return out
