"""The main thread's work on a real runtime: a forced stop between batches, deletions
and moves from the watcher."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsa110_ingest.ingest.watcher import DELETED, MOVED, FileEvent
from dsa110_ingest.metrics import Metrics
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service.health import Health
from dsa110_ingest.service.runtime import Runtime, ServiceHooks
from dsa110_ingest.service.signals import Flags, ForcedExit
from dsa110_ingest.service.work import Work

from ..conftest import Site, db_count, write_site


@pytest.fixture
def one_file_a_batch(tmp_path: Path) -> Site:
    return write_site(tmp_path, toml_extra="[read]\nbatch_size = 1\n")


@pytest.fixture
def work_on(one_file_a_batch: Site) -> Iterator[Work]:
    rt = Runtime(
        one_file_a_batch.cfg,
        convert=False,
        flags=Flags(),
        notifier=Notifier(None),
        metrics=Metrics(),
        hooks=ServiceHooks(),
        what="test",
        watch_mounts=False,
    )
    try:
        yield Work(rt, Health(rt))
    finally:
        rt.close()


def _rows(site: Site) -> int:
    return db_count(site.cfg.hdf5_db, "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 1")


def test_a_second_signal_ends_a_reconcile_at_a_batch_boundary(
    one_file_a_batch: Site, work_on: Work, sim_groups: Callable[..., list[Path]]
) -> None:
    sim_groups(one_file_a_batch.incoming, n=1)
    work_on.rt.flags.on_signal(15, None)
    work_on.rt.flags.on_signal(15, None)
    with pytest.raises(ForcedExit):
        work_on.reconcile("start-up")
    assert _rows(one_file_a_batch) == 1  # the first batch committed, nothing half done


def test_one_signal_ends_the_reconcile_at_its_next_batch_and_the_next_resumes(
    one_file_a_batch: Site, work_on: Work, sim_groups: Callable[..., list[Path]]
) -> None:
    # operations.md promises a stop within seconds: a long reconcile must not run on
    sim_groups(one_file_a_batch.incoming, n=1)
    work_on.rt.flags.on_signal(15, None)
    r = work_on.reconcile("start-up")
    assert r is not None and r.stopped and r.indexed == 1 and _rows(one_file_a_batch) == 1
    assert r.events == []  # no group expired by a pass that did not see every file
    work_on.rt.flags.should_exit = False  # the next start
    r = work_on.reconcile("start-up")
    assert r is not None and not r.stopped and (r.indexed, r.unchanged) == (15, 1)
    assert _rows(one_file_a_batch) == 16
    assert work_on.rt.counters.indexed == 16
    assert work_on.rt.counters.events == {"group.complete": 1}
    assert work_on.rt.metrics.reconcile_found._value.get() == 0  # start-up finds are no misses


def test_deleted_and_moved_files_from_the_watcher(
    one_file_a_batch: Site, work_on: Work, sim_groups: Callable[..., list[Path]]
) -> None:
    first, second, *_ = sim_groups(one_file_a_batch.incoming, n=1)
    now = time.time()
    work_on.index([FileEvent("ready", str(first), now), FileEvent("ready", str(second), now)])
    assert _rows(one_file_a_batch) == 2
    first.unlink()
    work_on.index([FileEvent(DELETED, str(first), now)])
    assert _rows(one_file_a_batch) == 1
    # a path still waiting for its writer's lock, then renamed: the old name is not retried
    work_on.rt.locked.defer(str(second), now)
    moved = second.with_name(second.name.replace("sb01", "sb15"))
    assert moved != second
    second.rename(moved)
    work_on.index([FileEvent(MOVED, str(moved), now, src_path=str(second))])
    assert str(second) not in work_on.rt.locked


def test_events_from_the_dispatcher_reach_the_jsonl_mirror_without_waiting_for_a_file(
    tmp_path: Path,
) -> None:
    """The dispatcher's ``group.converted`` (written on its own thread) is mirrored at the
    loop's next turn, not when the next file's event happens to sync the mirror."""
    site = write_site(tmp_path)
    mirror = tmp_path / "events.jsonl"
    site.config_path.write_text(f'events_jsonl = "{mirror}"\n' + site.config_path.read_text())
    rt = Runtime(
        site.cfg,
        convert=False,
        flags=Flags(),
        notifier=Notifier(None),
        metrics=Metrics(),
        hooks=ServiceHooks(),
        what="test",
        watch_mounts=False,
    )
    try:
        work = Work(rt, Health(rt))
        with rt.db.transaction("a conversion's outcome"):
            rt.db.add_event("group.converted", None, {"ms_path": "/x.ms"}, time.time())
        rt._on_convert_event("group.converted", "g", 1.0)  # what the dispatcher calls
        work.note_events()
        lines = mirror.read_text().splitlines() if mirror.exists() else []
        assert [json.loads(x)["type"] for x in lines] == ["group.converted"]
    finally:
        rt.close()


def test_serve_waiting_indexes_what_is_queued_and_never_waits(
    one_file_a_batch: Site, work_on: Work, sim_groups: Callable[..., list[Path]]
) -> None:
    first, second, *_ = sim_groups(one_file_a_batch.incoming, n=1)
    work_on.serve_waiting()  # nothing queued: nothing to do (get_nowait: no wait)
    assert _rows(one_file_a_batch) == 0
    now = time.time()
    work_on.rt.queue.put(FileEvent("ready", str(first), now))
    work_on.rt.queue.put(FileEvent("ready", str(second), now))
    work_on.serve_waiting()
    assert _rows(one_file_a_batch) == 2 and work_on.rt.queue.empty()


def test_a_batch_of_deletions_is_marked_in_one_go_and_a_name_written_again_stays(
    one_file_a_batch: Site,
    work_on: Work,
    sim_groups: Callable[..., list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = sim_groups(one_file_a_batch.incoming, n=1)
    now = time.time()
    work_on.index([FileEvent("ready", str(p), now) for p in files])
    assert _rows(one_file_a_batch) == 16
    data = files[0].read_bytes()
    for p in files:
        p.unlink()
    files[0].write_bytes(data)  # deleted, then written again under the same name
    # one call, one transaction for the batch's 16 deletions (one a file would end with
    # the same rows: mark_missing skips a path that exists again)
    rt = work_on.rt
    calls: list[list[str]] = []
    marking: list[str] = []
    mark, transaction = rt.indexer.mark_missing, rt.db.transaction

    def counted_mark(paths: list[str]):  # type: ignore[no-untyped-def]
        calls.append(list(paths))
        return mark(paths)

    def counted_tx(what: str, *a, **kw):  # type: ignore[no-untyped-def]
        if what == "marking deleted files":
            marking.append(what)
        return transaction(what, *a, **kw)

    monkeypatch.setattr(rt.indexer, "mark_missing", counted_mark)
    monkeypatch.setattr(rt.db, "transaction", counted_tx)
    work_on.index(
        [FileEvent(DELETED, str(p), now) for p in files] + [FileEvent("ready", str(files[0]), now)]
    )
    assert len(calls) == 1 and sorted(calls[0]) == sorted(str(p) for p in files)
    assert len(marking) == 1
    assert _rows(one_file_a_batch) == 1
    missing = {str(p): rt.db.get_file(str(p)).missing for p in files}  # type: ignore[union-attr]
    assert not missing.pop(str(files[0]))  # written again: it stays
    assert len(missing) == 15 and all(missing.values())
