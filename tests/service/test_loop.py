"""The loop's schedule under a fake clock: phases every turn, Every tasks when due,
burst mode, stops and the out-of-descriptors pause."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from dsa110_ingest.service.loop import EXIT_FATAL, EXIT_OK, Every, Loop, Phase, Stop
from dsa110_ingest.service.signals import Flags


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _loop(t: FakeTime, phases: list[Phase], tasks: list[Every], **kw: Any) -> Loop:
    return Loop(phases, tasks, Flags(), clock=t.clock, sleep=t.sleep, **kw)


def _stop_after(loop: Loop, turns: int) -> Phase:
    def check() -> None:
        if loop.turns >= turns:
            loop.flags.should_exit = True

    return Phase("stop", check)


def test_every_runs_at_the_first_turn_then_once_per_interval() -> None:
    t = FakeTime()
    ran: list[float] = []
    task = Every(1.0, lambda: ran.append(t.now), "tick")
    loop = _loop(t, [Phase("wait", lambda: t.sleep(0.25))], [task])
    loop.phases.append(_stop_after(loop, 12))
    assert loop.run() == EXIT_OK
    # turns at 1000.25, 1000.5, ... 1003.0: due at the first and then every full second
    assert ran == [1000.25, 1001.25, 1002.25]


def test_a_run_that_overran_waits_a_full_interval_after_it_ended() -> None:
    t = FakeTime()
    ran: list[float] = []

    def slow() -> None:
        ran.append(t.now)
        t.sleep(5.0)  # a reconcile longer than its interval

    loop = _loop(t, [Phase("wait", lambda: t.sleep(0.5))], [Every(2.0, slow, "slow")])
    loop.phases.append(_stop_after(loop, 8))
    loop.run()
    assert ran[0] == 1000.5
    assert ran[1] - (ran[0] + 5.0) >= 2.0  # never back to back
    assert ran[1] == 1007.5


def test_a_failed_run_is_retried_after_retry_s_not_the_interval() -> None:
    t = FakeTime()
    results = iter([False, True, True])
    ran: list[float] = []

    def work() -> bool:
        ran.append(t.now)
        return next(results)

    task = Every(100.0, work, "reconcile", retry_s=10.0)
    loop = _loop(t, [Phase("wait", lambda: t.sleep(1.0))], [task])
    loop.phases.append(_stop_after(loop, 130))
    loop.run()
    assert ran == [1001.0, 1011.0, 1111.0]


def test_asked_runs_the_task_now_and_restarts_its_interval() -> None:
    t = FakeTime()
    ran: list[float] = []
    asks = {1003.0}
    task = Every(
        10.0,
        lambda: ran.append(t.now),
        "reconcile",
        asked=lambda: t.now in asks,
        next_at=1000.0 + 10.0,
    )
    loop = _loop(t, [Phase("wait", lambda: t.sleep(1.0))], [task])
    loop.phases.append(_stop_after(loop, 14))
    loop.run()
    # not at the first turn (next_at given), asked at 1003, then 10 s after that
    assert ran == [1003.0, 1013.0]


def test_phases_run_in_order_before_the_tasks_every_turn() -> None:
    t = FakeTime()
    seen: list[str] = []
    loop = _loop(
        t,
        [Phase("a", lambda: seen.append("a")), Phase("b", lambda: seen.append("b"))],
        [Every(0.0, lambda: seen.append("task"), "task")],
    )
    loop.turn()
    loop.turn()
    assert seen == ["a", "b", "task", "a", "b", "task"]


def test_stop_from_a_task_ends_the_loop_with_its_code() -> None:
    t = FakeTime()

    def beat() -> None:
        raise Stop(EXIT_FATAL)

    loop = _loop(t, [Phase("wait", lambda: t.sleep(0.2))], [Every(1.0, beat, "beat")])
    assert loop.run() == EXIT_FATAL
    assert loop.turns == 1


def test_a_forced_exit_ends_with_status_1() -> None:
    t = FakeTime()
    loop = _loop(t, [], [])

    def signals() -> None:
        loop.flags.on_signal(15, None)
        loop.flags.on_signal(15, None)

    loop.phases.append(Phase("signals", signals))
    assert loop.run() == EXIT_FATAL and loop.flags.force_exit


def test_burst_mode_ends_once_drained() -> None:
    t = FakeTime()
    left = [3]

    def work() -> None:
        left[0] -= 1

    loop = _loop(t, [Phase("work", work)], [], drained=lambda: left[0] == 0)
    assert loop.run() == EXIT_OK
    assert loop.turns == 3


def test_out_of_descriptors_is_reported_paused_and_survived() -> None:
    t = FakeTime()
    reported: list[str] = []
    calls = [0]

    def flaky() -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.EMFILE, "Too many open files")

    loop = _loop(
        t,
        [Phase("flaky", flaky)],
        [],
        on_out_of_fds=lambda e, where: reported.append(where),
        drained=lambda: calls[0] >= 3,
    )
    assert loop.run() == EXIT_OK
    assert reported == ["main loop"] and t.now == 1001.0


def test_any_other_os_error_is_a_bug_and_propagates() -> None:
    t = FakeTime()

    def broken() -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        _loop(t, [Phase("broken", broken)], []).run()


def test_on_turn_is_called_before_every_turn() -> None:
    t = FakeTime()
    marks: list[float] = []
    loop = _loop(
        t,
        [Phase("wait", lambda: t.sleep(0.2))],
        [],
        on_turn=lambda: marks.append(t.now),
        drained=lambda: len(marks) >= 3,
    )
    loop.run()
    assert marks == pytest.approx([1000.0, 1000.2, 1000.4])


def test_waiting_files_are_served_before_each_due_task_only() -> None:
    t = FakeTime()
    seen: list[str] = []
    loop = _loop(
        t,
        [Phase("events", lambda: seen.append("events"))],
        [
            Every(0.0, lambda: seen.append("expire"), "expire"),
            Every(100.0, lambda: seen.append("beat"), "beat", next_at=2000.0),
            Every(0.0, lambda: seen.append("reconcile"), "reconcile"),
        ],
        serve=lambda: seen.append("serve"),
    )
    loop.turn()
    # the beat is not due: no serve for it, and none when no task is due at all
    assert seen == ["events", "serve", "expire", "serve", "reconcile"]
    seen.clear()
    loop.tasks = loop.tasks[1:2]
    loop.turn()
    assert seen == ["events"]


def test_a_task_interval_starts_after_the_files_served_before_it() -> None:
    t = FakeTime()
    ran: list[float] = []
    loop = _loop(
        t, [], [Every(10.0, lambda: ran.append(t.now), "expire")], serve=lambda: t.sleep(1.0)
    )
    loop.turn()  # serve from 1000 to 1001, then the task
    t.sleep(9.0)  # 1010: 10 s after serve started, but the task started at 1001
    loop.turn()
    assert ran == [1001.0]
    t.sleep(1.0)
    loop.turn()
    assert ran == [1001.0, 1012.0]
