"""watchdog's inotify observer without its move-pairing stall, for :mod:`.watcher`.

watchdog holds each IN_MOVED_FROM to pair it with its IN_MOVED_TO, in a queue between
the thread that reads the inotify descriptor and the emitter thread. That queue's
consumer, once it has seen an IN_MOVED_FROM at the head, sleeps out the whole hold
(0.5 s) even when the IN_MOVED_TO pairs it away a microsecond later, and every event
behind it waits too (watchdog issue #649: "consistent delay of 500ms"). Every rename
inside a watched folder (``x.tmp`` -> ``x``, rsync's hidden temp) could so hold the
next files back by up to half a second. Built on watchdog 7's inotify internals (the
version is pinned in pyproject); the tests in tests/ingest/test_watcher.py fail if a
watchdog upgrade changes them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from watchdog.observers.inotify import (
    InotifyFullEmitter,
    InotifyObserver,
    InotifyWatchGroup,
    PathedInotifyEvent,
)
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
from watchdog.utils.delayed_queue import DelayedQueue

# How long an IN_MOVED_FROM waits for its IN_MOVED_TO. The kernel queues the two back to
# back, so they pair within one read of the inotify descriptor; a file's move that stays
# unpaired is a move out of the watch (a deletion for us). A directory waits as long as
# watchdog's own default, because watchdog moves the watches below it only when the
# pair is seen (and every directory move makes us reconcile anyway).
FILE_MOVE_PAIR_S = 0.005
DIR_MOVE_PAIR_S = 0.5

Grouped = PathedInotifyEvent | tuple[PathedInotifyEvent, PathedInotifyEvent]


class _PromptQueue(DelayedQueue[Grouped]):
    """watchdog's queue between the inotify reader and the emitter, without its stall.

    watchdog's consumer, finding an IN_MOVED_FROM at the head, sleeps the whole delay
    (0.5 s) even when the IN_MOVED_TO pairs it a microsecond later, and every event
    behind it waits too: any rename inside the folder (``x.tmp`` -> ``x``, rsync) could
    hold the next files back by up to 0.5 s. Here the consumer waits on the condition, so
    the pairing wakes it at once, and a file's move waits FILE_MOVE_PAIR_S for a partner.
    """

    def __init__(self, file_s: float, dir_s: float) -> None:
        super().__init__(dir_s)
        self.file_s = file_s

    def put(self, element: Grouped, *, delay: bool = False) -> None:
        hold = 0.0
        if delay:
            is_dir = isinstance(element, PathedInotifyEvent) and element.ev.is_directory
            hold = self.delay if is_dir else self.file_s
        with self._not_empty:
            # the middle slot holds when the element may leave, not when it came
            self._queue.append((element, time.monotonic() + hold, delay))
            self._not_empty.notify()

    def get(self) -> Grouped | None:
        with self._not_empty:
            while not self._closed:
                if not self._queue:
                    self._not_empty.wait()
                    continue
                head, due, _ = self._queue[0]
                left = due - time.monotonic()
                if left <= 0:
                    self._queue.popleft()
                    return head
                # a put (the IN_MOVED_TO that pairs the head away) wakes us early
                self._not_empty.wait(left)
            return None

    def close(self) -> None:
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()


class _PromptGrouper(InotifyMoveEventGrouper):
    def __init__(self) -> None:
        super().__init__()
        self._queue = _PromptQueue(FILE_MOVE_PAIR_S, DIR_MOVE_PAIR_S)


@dataclass
class _PromptWatchGroup(InotifyWatchGroup):
    _move_event_grouper: InotifyMoveEventGrouper = field(default_factory=_PromptGrouper, init=False)


class _PromptEmitter(InotifyFullEmitter):
    def on_thread_start(self) -> None:
        # InotifyEmitter.on_thread_start with our watch group
        self._inotify = _PromptWatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
        )


class PromptInotifyObserver(InotifyObserver):
    """``InotifyObserver(generate_full_events=True)`` whose emitters pair moves without
    stalling (:class:`_PromptQueue`). Full events: a move in from an unwatched folder is
    a move with no source, which finishes the file, not a creation that would wait for
    the settle time. Built on watchdog 7's inotify internals (pinned in pyproject)."""

    def __init__(self) -> None:
        super().__init__(generate_full_events=True)
        self._emitter_class = _PromptEmitter
