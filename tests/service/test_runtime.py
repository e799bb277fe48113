"""The runtime is built whole or not at all, and its shutdown leaves the state dir ready
for the next daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dsa110_ingest.config import Config
from dsa110_ingest.errors import IngestError
from dsa110_ingest.metrics import Metrics
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service.runtime import Runtime, ServiceHooks
from dsa110_ingest.service.signals import Flags
from dsa110_ingest.statedir import AlreadyRunningError, EventIdFloor, StateLock

from ..conftest import Site, write_site


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
