"""Watching storage locations with watchdog, and deciding when a file is finished.

A file is taken at the event that says its writer is done, never later:

- written in place, ``cp``, ``mv`` across filesystems (a copy, then an unlink):
  close after write (IN_CLOSE_WRITE);
- renamed within a watched folder (``x.tmp`` -> ``x``, rsync's ``.x.XXXXXX`` -> ``x``):
  the paired rename;
- ``mv`` into the folder from anywhere unwatched on the same filesystem: the unpaired
  IN_MOVED_TO, which watchdog reports as a move with an empty source because the
  inotify observer is built with ``generate_full_events=True``;
- ``ln`` into the folder: an IN_CREATE of a name that already holds data (its inode has
  another link, or had one), whose size and mtime hold across the check and that no
  process has open for writing (a read lease, F_SETLEASE, is refused while a writer
  exists). Where the lease cannot be taken (file owned by another user without
  CAP_LEASE, or a filesystem without leases) we cannot tell, and the file waits
  ``settle_seconds`` like any writer without a signal.

Only writers that give no finishing signal wait ``settle_seconds``: everything found by
polling, a writer that never closes its file, a link to a file its writer still has
open, and symlinks. Work leaves this module as
:class:`FileEvent` items on a queue; the indexer thread is the only DB writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from dsa110_ingest.config import StorageLocation, location_holding
from dsa110_ingest.ingest.prompt_inotify import PromptInotifyObserver
from dsa110_ingest.naming import NameParser

log = structlog.get_logger("dsa110_ingest.watcher")

# inotify sees only local writes on these; a writer on another host goes unseen
POLL_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuseblk",
        "9p",
        "sshfs",
        "glusterfs",
        "ceph",
        "lustre",
        "gpfs",
        "afs",
        "davfs",
    }
)

READY, DELETED, MOVED = "ready", "deleted", "moved"


@dataclass(frozen=True, slots=True)
class FileEvent:
    kind: str  # READY (finished, index it), DELETED, MOVED (src_path -> path)
    path: str
    seen_at: float  # time.time() when the event that made it ready was seen
    src_path: str = ""


def mount_of(path: Path, mounts_file: str = "/proc/self/mounts") -> tuple[str, str]:
    """(mount point, fs type) of the filesystem holding ``path``."""
    best = ("/", "unknown")
    p = str(path.resolve())
    try:
        with open(mounts_file, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, parts[2])
    except OSError:
        pass
    return best


def needs_polling(fstype: str) -> bool:
    return fstype in POLL_FSTYPES or fstype.startswith("fuse")


def choose_mode(loc: StorageLocation, mounts_file: str = "/proc/self/mounts") -> tuple[str, str]:
    """(mode, fs type): ``auto`` polls where inotify is blind."""
    _, fstype = mount_of(loc.path, mounts_file)
    if loc.watch != "auto":
        return loc.watch, fstype
    return ("poll" if needs_polling(fstype) else "inotify"), fstype


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


def finished_link(path: str) -> bool:
    """A name that just appeared (IN_CREATE): was a finished file linked in (``ln``)?

    A writer's new file appears empty and open for writing, and its close finishes it. A
    name that appears already holding data that no process has open for writing was
    made elsewhere and linked in: ``ln`` (the inode has other links), ``ln`` then ``rm``
    of the original before we looked (one link left), an O_TMPFILE linked into place
    after its close. It is finished if its size and mtime also hold during the check.
    Symlinks are not followed here: they wait for the settle time.
    """
    try:
        before = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(before.st_mode) or before.st_size == 0:
        return False
    if open_for_writing(path) is not False:
        return False
    try:
        after = os.lstat(path)
    except OSError:
        return False
    return (before.st_ino, before.st_size, before.st_mtime_ns) == (
        after.st_ino,
        after.st_size,
        after.st_mtime_ns,
    )


class _OverflowHook(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log record; catch it."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


class Settler:
    """Files seen changing; each is ready once size and mtime hold still long enough."""

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int, float]] = {}

    def touch(self, path: str) -> None:
        # the settle clock starts at this change, not at the next check
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock:
            self._files[path] = (st.st_size, st.st_mtime_ns, self.clock())

    def forget(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)

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


# The events the handler acts on. Asking the kernel for only these leaves out IN_OPEN and
# IN_CLOSE_NOWRITE: two events for every read of every file (the daemon's own header reads
# among them) that would otherwise cross three watchdog threads for nothing.
HANDLED_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    """Turns one observer's events into :class:`FileEvent`. ``finishing``: the observer is
    inotify, whose events carry a writer's last act; polling sees only snapshots."""

    def __init__(self, watcher: Watcher, *, finishing: bool) -> None:
        self.w = watcher
        self.finishing = finishing

    def on_any_event(self, event: FileSystemEvent) -> None:
        w = self.w
        try:
            if isinstance(event, DirMovedEvent):
                w.request_reconcile("directory moved")
                return
            if event.is_directory:
                return
            src = os.fsdecode(event.src_path)
            if isinstance(event, FileClosedEvent):
                # in place, cp, mv across filesystems: the writer's close
                if w.wanted(src):
                    w.settler.forget(src)
                    w.emit(FileEvent(READY, src, time.time()))
            elif isinstance(event, FileMovedEvent):
                # src is "" for a move in from outside every watch (unpaired IN_MOVED_TO),
                # dest is "" for a move out of them (unpaired IN_MOVED_FROM)
                dest = os.fsdecode(event.dest_path)
                if src:
                    w.settler.forget(src)
                if dest and w.wanted(dest):
                    w.settler.forget(dest)
                    moved = bool(src) and w.wanted(src)
                    w.emit(FileEvent(MOVED if moved else READY, dest, time.time(), src))
                elif src and w.wanted(src):
                    w.emit(FileEvent(DELETED, src, time.time()))
            elif isinstance(event, FileDeletedEvent):
                w.settler.forget(src)
                if w.wanted(src):
                    w.emit(FileEvent(DELETED, src, time.time()))
            elif isinstance(event, FileCreatedEvent) and w.wanted(src):
                if self.finishing and finished_link(src):
                    w.settler.forget(src)
                    w.emit(FileEvent(READY, src, time.time()))
                else:
                    w.settler.touch(src)
            elif isinstance(event, FileModifiedEvent) and w.wanted(src):
                w.settler.touch(src)
            # opened / closed-without-write / attrib: our own reads land here and do nothing
        except Exception:
            log.exception("watcher.handler_error", path=str(event.src_path))
            w.request_reconcile("event handler error")


class Watcher:
    """All observers of all storage locations, feeding one queue."""

    def __init__(
        self,
        locations: Iterable[tuple[int, StorageLocation]],
        parser: NameParser,
        out: queue.Queue[FileEvent],
        *,
        settle_s: float,
        poll_interval_s: float,
        mounts_file: str = "/proc/self/mounts",
        drop: Callable[[FileEvent], bool] | None = None,
    ) -> None:
        self.locations = list(locations)
        self.parser = parser
        self.out = out
        self.settler = Settler(settle_s)
        self.poll_interval_s = poll_interval_s
        self.mounts_file = mounts_file
        self.drop = drop  # fault injection for tests: events it returns True for are lost
        self.observers: dict[str, BaseObserver] = {}
        self.modes: dict[str, str] = {}
        self._watches: dict[str, tuple[BaseObserver, ObservedWatch]] = {}
        self._handlers = {
            "inotify": _Handler(self, finishing=True),
            "poll": _Handler(self, finishing=False),
        }
        self._reconcile = threading.Event()
        self.reconcile_reasons: list[str] = []
        self._hook = _OverflowHook(lambda: self.request_reconcile("inotify queue overflow"))

    def wanted(self, path: str) -> bool:
        if not self.parser.is_candidate(os.path.basename(path)):
            return False
        return location_holding(self.locations, path) is not None

    def emit(self, ev: FileEvent) -> None:
        if self.drop is not None and self.drop(ev):
            return
        self.out.put(ev)

    def request_reconcile(self, reason: str) -> None:
        self.reconcile_reasons.append(reason)
        self._reconcile.set()

    def take_reconcile_request(self) -> list[str]:
        if not self._reconcile.is_set():
            return []
        self._reconcile.clear()
        reasons, self.reconcile_reasons = self.reconcile_reasons, []
        return reasons or ["requested"]

    def start(self) -> None:
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._hook)
        logging.getLogger("watchdog.observers.inotify").addHandler(self._hook)
        for _, loc in self.locations:
            mode, fstype = choose_mode(loc, self.mounts_file)
            if not loc.path.is_dir():
                log.error(
                    "location.missing",
                    location=loc.name,
                    path=str(loc.path),
                    hint="create or mount it; it is picked up by the next reconcile",
                )
                mode = "poll"  # a polling watch survives the folder appearing later
            try:
                self._schedule(mode, loc)
            except OSError as e:
                sysctl = {
                    errno.ENOSPC: "fs.inotify.max_user_watches",
                    errno.EMFILE: "fs.inotify.max_user_instances",
                }.get(e.errno or 0)
                log.error(
                    "watch.failed",
                    location=loc.name,
                    path=str(loc.path),
                    error=str(e),
                    hint=f"raise sysctl {sysctl}" if sysctl else "check the path",
                    fallback="poll",
                )
                mode = "poll"
                self._schedule(mode, loc)
                self.request_reconcile(f"watch failed on {loc.name}")
            self.modes[loc.name] = mode
            log.info(
                "watch.started",
                location=loc.name,
                path=str(loc.path),
                mode=mode,
                fstype=fstype,
                requested=loc.watch,
                recursive=loc.recursive,
            )
        for obs in self.observers.values():
            obs.start()

    def _schedule(self, mode: str, loc: StorageLocation) -> None:
        obs = self.observers.get(mode)
        if obs is None:
            obs = (
                PromptInotifyObserver()
                if mode == "inotify"
                else PollingObserver(timeout=self.poll_interval_s)
            )
            obs.daemon = True
            self.observers[mode] = obs
        if loc.path.is_dir():
            self._watches[loc.name] = (
                obs,
                obs.schedule(
                    self._handlers[mode],
                    str(loc.path),
                    recursive=loc.recursive,
                    event_filter=HANDLED_EVENTS,
                ),
            )

    def check_locations(self) -> None:
        """Re-arm watches: a location that was missing and is back gets its watch and a
        reconcile; one that vanished (unmounted, renamed) loses its dead watch."""
        for _, loc in self.locations:
            present = loc.path.is_dir()
            watched = loc.name in self._watches
            if present and not watched:
                mode = self.modes.get(loc.name) or choose_mode(loc, self.mounts_file)[0]
                try:
                    self._schedule(mode, loc)
                except OSError as e:
                    log.error("watch.failed", location=loc.name, error=str(e))
                    continue
                log.info("location.back", location=loc.name, path=str(loc.path), mode=mode)
                self.request_reconcile(f"location {loc.name} appeared")
            elif watched and not present:
                obs, watch = self._watches.pop(loc.name)
                with contextlib.suppress(KeyError, OSError):
                    obs.unschedule(watch)
                log.error(
                    "location.missing",
                    location=loc.name,
                    path=str(loc.path),
                    hint="mount or create it; it is watched again when it is back",
                )

    def rearm(self, name: str) -> None:
        """Drop the watch of location ``name``; check_locations() schedules a fresh one on
        whatever is mounted there now."""
        if name in self._watches:
            obs, watch = self._watches.pop(name)
            with contextlib.suppress(KeyError, OSError):
                obs.unschedule(watch)

    def alive(self) -> bool:
        return all(
            o.is_alive() and all(e.is_alive() for e in o.emitters) for o in self.observers.values()
        )

    def stop(self) -> None:
        for obs in self.observers.values():
            obs.stop()
        for obs in self.observers.values():
            if obs.is_alive():
                obs.join(timeout=5)
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._hook)
        logging.getLogger("watchdog.observers.inotify").removeHandler(self._hook)
