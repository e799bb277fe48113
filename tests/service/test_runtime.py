"""The runtime is built whole or not at all, and its shutdown leaves the state dir ready
for the next daemon."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dsa110_ingest.config import Config
from dsa110_ingest.errors import IngestError
from dsa110_ingest.metrics import Metrics
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service.runtime import FloorWriter, Runtime, ServiceHooks
from dsa110_ingest.service.signals import Flags
from dsa110_ingest.statedir import AlreadyRunningError, EventIdFloor, StateLock

from ..conftest import Site, wait_for, write_site


def _build(site: Site | Config, what: str = "run") -> Runtime:
    return Runtime(
        site.cfg if isinstance(site, Site) else site,
        convert=False,
        flags=Flags(),
        notifier=Notifier(None),
        metrics=Metrics(),
        hooks=ServiceHooks(),
        what=what,
        watch_mounts=True,
    )


def test_a_second_runtime_on_the_same_db_is_refused_naming_the_first(site: Site) -> None:
    rt = _build(site)
    try:
        with pytest.raises(AlreadyRunningError, match=r"`run --rescan` refuses to start"):
            _build(site, "run --rescan")
    finally:
        rt.close()
    assert StateLock(site.cfg.hdf5_db).holder() is None
    _build(site).close()  # the lock was released: the next daemon starts


def test_a_part_that_cannot_be_built_undoes_what_was_opened(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    cfg = site.cfg
    cfg.products_db.parent.mkdir(parents=True)
    cfg.products_db.write_bytes(b"not a database, " * 512)  # opened after the lock is taken
    with pytest.raises(IngestError, match=str(cfg.products_db)):
        _build(cfg)
    # the lock taken before the failure is released again
    assert StateLock(cfg.hdf5_db).holder() is None


def test_close_writes_the_event_id_floor_and_releases_the_lock(
    site: Site, sim_groups: Callable[..., list[Path]]
) -> None:
    sim_groups(site.incoming, n=1)
    rt = _build(site)
    r = rt.indexer.reconcile()
    assert r.events  # the group completed: an event id was handed out
    assert rt.mounts is not None  # /proc/self/mountinfo exists on Linux
    rt.close()
    assert EventIdFloor(site.cfg.hdf5_db).value >= 1
    assert StateLock(site.cfg.hdf5_db).holder() is None


def test_no_storage_locations_is_a_clear_error_before_any_file_is_made(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    site.config_path.write_text('state_dir = "state"\n')
    with pytest.raises(IngestError, match=r"no storage locations configured.*config --example"):
        _build(site)
    assert not (tmp_path / "state").exists()


def test_the_event_id_floor_is_written_off_the_callers_thread(tmp_path: Path) -> None:
    floor = EventIdFloor(tmp_path / "h.sqlite3")
    release = threading.Event()
    calls: list[int] = []

    def slow_write(value: int) -> bool:
        calls.append(value)
        if len(calls) == 1:
            assert release.wait(30)  # a slow fsync
            return False  # and then out of descriptors: kept, tried again
        floor.write(value)
        return True

    w = FloorWriter(slow_write)
    try:
        w.raise_to(5)
        wait_for(lambda: calls == [5])
        w.raise_to(7)  # returns at once while the first write hangs
        w.raise_to(6)  # never lowers it
        assert floor.value == 0
        release.set()
        wait_for(lambda: floor.value == 7, msg=lambda: f"calls {calls}")
    finally:
        w.close()
    assert EventIdFloor(tmp_path / "h.sqlite3").value == 7


def test_closing_the_floor_writer_writes_the_last_value(tmp_path: Path) -> None:
    floor = EventIdFloor(tmp_path / "h.sqlite3")
    failing = [True]

    def write(value: int) -> bool:
        if failing[0]:
            return False
        floor.write(value)
        return True

    w = FloorWriter(write)
    w.raise_to(3)
    failing[0] = False
    w.close()  # ends the retry wait and writes what is owed
    assert EventIdFloor(tmp_path / "h.sqlite3").value == 3
