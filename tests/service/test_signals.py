"""Signals only set flags; the main thread acts on them."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from dsa110_ingest.service.signals import HANDLED, Flags, ForcedExit


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in HANDLED}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_real_signals_set_flags_and_a_second_stop_forces(restore_handlers: None) -> None:
    flags = Flags()
    flags.install()
    os.kill(os.getpid(), signal.SIGHUP)
    assert flags.reopen_logs and not flags.should_exit
    flags.check_forced()  # not forced: no exception
    os.kill(os.getpid(), signal.SIGTERM)
    assert flags.should_exit and not flags.force_exit
    flags.check_forced()
    os.kill(os.getpid(), signal.SIGINT)
    assert flags.force_exit
    with pytest.raises(ForcedExit):
        flags.check_forced()


def test_off_the_main_thread_no_handler_is_installed(restore_handlers: None) -> None:
    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=Flags().install)
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is before
