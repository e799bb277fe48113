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
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from watchdog.events import (
    DirCreatedEvent,
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
from dsa110_ingest.ingest.finished import Settler, finished_link
from dsa110_ingest.ingest.prompt_inotify import PromptInotifyObserver
from dsa110_ingest.ingest.watch_mode import choose_mode
from dsa110_ingest.naming import NameParser

log = structlog.get_logger("dsa110_ingest.watcher")

READY, DELETED, MOVED = "ready", "deleted", "moved"


@dataclass(frozen=True, slots=True)
class FileEvent:
    kind: str  # READY (finished, index it), DELETED, MOVED (src_path -> path)
    path: str
    seen_at: float  # time.time() when the event that made it ready was seen
    src_path: str = ""


class _OverflowHook(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log record; catch it."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


# The events the handler acts on. Asking the kernel for only these leaves out IN_OPEN and
# IN_CLOSE_NOWRITE: two events for every read of every file (the daemon's own header reads
# among them) that would otherwise cross three watchdog threads for nothing.
HANDLED_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


def _unresolved_link(path: str) -> bool:
    """A symlink whose target does not resolve (dangling, or a loop)."""
    try:
        os.stat(path)
    except OSError:
        return os.path.islink(path)
    return False


class _Handler(FileSystemEventHandler):
    """Turns one observer's events into :class:`FileEvent`. ``finishing``: the observer is
    inotify, whose events carry a writer's last act; polling sees only snapshots."""

    def __init__(self, watcher: Watcher, *, finishing: bool) -> None:
        self.w = watcher
        self.finishing = finishing

    def on_any_event(self, event: FileSystemEvent) -> None:
        w = self.w
        try:
            if event.is_directory:
                self._directory(event)
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
                st = finished_link(src) if self.finishing else None
                if st is not None:
                    w.settler.taken(src, st)
                    w.emit(FileEvent(READY, src, time.time()))
                elif _unresolved_link(src):
                    # a dangling link or a loop never settles (nothing to stat): the
                    # indexer rejects it now (not_a_file), as it does a FIFO
                    w.emit(FileEvent(READY, src, time.time()))
                else:
                    w.settler.touch(src)
            elif isinstance(event, FileModifiedEvent) and w.wanted(src):
                w.settler.touch(src)
            # opened / closed-without-write / attrib: our own reads land here and do nothing
        except Exception:
            log.exception("watcher.handler_error", path=str(event.src_path))
            w.request_reconcile("event handler error")

    def _directory(self, event: FileSystemEvent) -> None:
        """A directory made or moved in under a subband file's name goes to the indexer
        at once, which rejects it (``not_a_file``) as it does a FIFO, not at the next
        reconcile; a directory moved anywhere still asks for one (files moved with it)."""
        w = self.w
        if isinstance(event, DirMovedEvent):
            w.request_reconcile("directory moved")
            dest = os.fsdecode(event.dest_path)
        elif isinstance(event, DirCreatedEvent):
            dest = os.fsdecode(event.src_path)
        else:
            return
        if dest and w.wanted(dest):
            w.emit(FileEvent(READY, dest, time.time()))


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
