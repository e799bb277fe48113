"""The main loop: named phases every turn, then the periodic tasks that are due.

Files come first: before each periodic task that is due, ``serve`` takes whatever file
events are already waiting (without waiting for more), so a file that arrived while the
turn's phases or an earlier task ran is not held back by the next task too.

The live daemon and ``run --rescan`` turn the same loop. Live, it runs until a signal;
in burst mode (arq's ``burst``) it also ends, with status 0, once ``drained`` says the
work it was started for is done.

Time comes from an injected monotonic clock, so the schedule is unit-tested with a fake
one (tests/service/test_loop.py).
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dsa110_ingest.service.signals import Flags

EXIT_OK = 0
EXIT_FATAL = 1

Clock = Callable[[], float]
_FD_ERRNOS = (errno.EMFILE, errno.ENFILE)


def out_of_fds(e: BaseException) -> bool:
    """EMFILE/ENFILE: a condition of the node (too many open files), not a bug."""
    return isinstance(e, OSError) and e.errno in _FD_ERRNOS


class Stop(Exception):
    """Raised by a phase or task: end the loop with exit status ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Phase:
    """A step of every turn, in list order."""

    name: str
    fn: Callable[[], None]


@dataclass
class Every:
    """Run ``fn`` every ``interval`` seconds of the loop's clock, first at the first turn.

    The next run is ``interval`` after this one started; a run that overran its interval
    waits a full interval after it ended (a slow reconcile never runs back to back).
    ``fn`` returning False means it could not do its work: it runs again ``retry_s`` after
    it ended (or ``interval``, whichever is sooner). ``asked`` returning True runs it at
    this turn whatever the time (the watcher asking for a reconcile).
    """

    interval: float
    fn: Callable[[], bool | None]
    name: str
    retry_s: float | None = None
    asked: Callable[[], bool] | None = None
    next_at: float = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.next_at or bool(self.asked and self.asked())

    def run_if_due(self, clock: Clock, before: Callable[[], None] = lambda: None) -> None:
        """``before`` runs first when the task is due (the loop's ``serve``)."""
        if not self.due(clock()):
            return
        before()
        start = clock()
        ok = self.fn()
        end = clock()
        if ok is False and self.retry_s is not None:
            self.next_at = end + min(self.interval, self.retry_s)
        elif start + self.interval > end:
            self.next_at = start + self.interval
        else:
            self.next_at = end + self.interval


class Loop:
    def __init__(
        self,
        phases: Sequence[Phase],
        tasks: Sequence[Every],
        flags: Flags,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_turn: Callable[[], None] = lambda: None,
        on_out_of_fds: Callable[[OSError, str], None] = lambda e, where: None,
        drained: Callable[[], bool] | None = None,
        serve: Callable[[], None] = lambda: None,
    ) -> None:
        self.phases = list(phases)
        self.tasks = list(tasks)
        self.flags = flags
        self.clock = clock
        self.sleep = sleep
        self.on_turn = on_turn
        self.on_out_of_fds = on_out_of_fds
        self.drained = drained  # burst mode: the work this loop was started for is done
        self.serve = serve  # take the file events already waiting, before a periodic task
        self.turns = 0

    def run(self) -> int:
        """Turn until a signal (exit 0), a Stop (its code) or, in burst mode, drained."""
        # The GIL's switch interval stays at its default (5 ms). 1 ms took the GIL waits
        # out of the traced spans, but in back-to-back runs on a loaded 2-core machine the
        # events' tail was no better, if anything worse (more hand-overs, each a chance
        # for the new holder to be preempted).
        while not self.flags.should_exit:
            if self.drained is not None and self.drained():
                return EXIT_OK
            self.on_turn()
            try:
                self.turn()
            except Stop as e:
                return e.code
            except OSError as e:
                if not out_of_fds(e):
                    raise
                # the node is out of descriptors: log, wait, go on (the work is kept)
                self.on_out_of_fds(e, "main loop")
                self.sleep(1.0)
        return EXIT_FATAL if self.flags.force_exit else EXIT_OK

    def turn(self) -> None:
        self.turns += 1
        for phase in self.phases:
            phase.fn()
        for task in self.tasks:
            task.run_if_due(self.clock, self.serve)
