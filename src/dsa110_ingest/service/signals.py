"""Signals only set flags (uvicorn's pattern): the main thread acts on them at a point
where no transaction is half done.

- SIGTERM / SIGINT: stop (``should_exit``); the loop notices within one turn and shuts
  down in stages, each with a time limit.
- a second SIGTERM / SIGINT: the operator means now (``force_exit``): long work stops at
  its next batch boundary, the shutdown skips every wait, and the exit status is 1.
- SIGHUP: reopen the log file (logrotate moved it).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ForcedExit(Exception):
    """Raised by the main thread (never by a handler) at a safe point once forced."""


class Flags:
    def __init__(self) -> None:
        self.should_exit = False
        self.force_exit = False
        self.reopen_logs = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reopen_logs = True
        elif self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner stops us by setting should_exit
        for s in HANDLED:
            signal.signal(s, self.on_signal)

    def check_forced(self) -> None:
        """Call between units of work (a batch of files): end them if the operator insists."""
        if self.force_exit:
            raise ForcedExit
