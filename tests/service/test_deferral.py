"""Locked files: one schedule, doubling delays, dropped (and logged) past the limit."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dsa110_ingest.service.deferral import MAX_DELAY_S, REFUSED_DELAY_S, LockedFiles


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _retry_times(lf: LockedFiles, clock: FakeClock, until: float, step: float) -> list[float]:
    times = []
    while clock.now < until:
        clock.now = round(clock.now + step, 6)
        if lf.due():
            times.append(clock.now)
    return times


def test_first_retry_after_half_a_second_then_doubling() -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=1000, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=123.0)
    assert lf.due() == []
    clock.now = 0.5
    assert lf.due() == [("/d/a.hdf5", 123.0)]
    assert _retry_times(lf, clock, until=16.0, step=0.5) == [1.5, 3.5, 7.5, 15.5]


def test_a_refused_batch_waits_a_second() -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=1000, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=1.0, first_delay=REFUSED_DELAY_S)
    clock.now = 0.9
    assert lf.due() == []
    clock.now = 1.0
    assert [p for p, _ in lf.due()] == ["/d/a.hdf5"]


def test_deferring_again_keeps_the_schedule() -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=1000, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=1.0)
    clock.now = 0.4
    lf.defer("/d/a.hdf5", seen_at=2.0)  # still locked at the next try: same entry
    clock.now = 0.5
    assert lf.due() == [("/d/a.hdf5", 1.0)]
    assert len(lf) == 1


def test_discarded_paths_are_not_retried() -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=1000, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=1.0)
    lf.defer("/d/b.hdf5", seen_at=1.0)
    lf.discard("/d/a.hdf5")
    lf.discard("/d/never.hdf5")
    clock.now = 1.0
    assert [p for p, _ in lf.due()] == ["/d/b.hdf5"]
    assert "/d/a.hdf5" not in lf and "/d/b.hdf5" in lf


def test_past_the_limit_a_path_is_dropped_and_logged() -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=10, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=1.0)
    with capture_logs() as seen:
        times = _retry_times(lf, clock, until=60.0, step=0.5)
    assert times == [0.5, 1.5, 3.5, 7.5]  # the try at 15.5 is past 10 s: dropped
    assert len(lf) == 0
    (rec,) = [r for r in seen if r["event"] == "file.still_locked"]
    assert rec["path"] == "/d/a.hdf5" and rec["seconds"] == 16 and "reconcile" in rec["hint"]


@given(st.lists(st.floats(min_value=0.01, max_value=40.0), min_size=1, max_size=60))
def test_retries_never_come_sooner_than_the_doubling_schedule(
    steps: list[float],
) -> None:
    clock = FakeClock()
    lf = LockedFiles(limit_s=1e9, clock=clock)
    lf.defer("/d/a.hdf5", seen_at=0.0)
    times = [0.0]
    for s in steps:
        clock.now += s
        if lf.due():
            times.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for i, gap in enumerate(gaps):
        assert gap >= min(0.5 * 2**i, MAX_DELAY_S) - 1e-9
