"""Every way a file arrives is taken at its finishing event, not after the settle time.

Real inotify and polling observers, real files, real `cp`/`mv`/`ln` processes. The
watchers here get ``settle_s=30`` and nothing ever asks the settler for due files, so a
style that fell back to waiting for the settle time cannot pass by luck: its event never
comes within the (generous) deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers.inotify import PathedInotifyEvent
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent

from dsa110_ingest.config import StorageLocation
from dsa110_ingest.ingest import prompt_inotify
from dsa110_ingest.ingest import watcher as watcher_module
from dsa110_ingest.ingest.finished import finished_link, open_for_writing
from dsa110_ingest.ingest.prompt_inotify import _PromptQueue
from dsa110_ingest.ingest.watcher import (
    DELETED,
    READY,
    FileEvent,
    Watcher,
)
from dsa110_ingest.naming import NameParser
from dsa110_ingest.tools.simulate import file_name, write_subband_file

from ..conftest import SMALL, Site, db_count, wait_for, write_site

SETTLE_S = 30.0
DEADLINE_S = 15.0  # well past any event delivery under load, well short of the settle time
T0 = 1759363200.0  # 2025-10-02T00:00:00


class Watched:
    """One watched folder, its event queue, and a folder elsewhere to make files in."""

    def __init__(self, root: Path, mode: str) -> None:
        self.inbox = root / "in"
        self.elsewhere = root / "elsewhere"
        self.inbox.mkdir()
        self.elsewhere.mkdir()
        self.q: queue.Queue[FileEvent] = queue.Queue()
        loc = StorageLocation(name="in", path=self.inbox, watch=mode)
        self.w = Watcher([(1, loc)], NameParser(), self.q, settle_s=SETTLE_S, poll_interval_s=0.1)
        self.w.start()
        assert self.w.modes == {"in": mode}
        self.seen: list[FileEvent] = []

    def event_for(self, path: Path, timeout: float = DEADLINE_S) -> FileEvent:
        """The first event that makes ``path`` ready (READY, or MOVED into it)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.seen:
                if ev.path == str(path) and ev.kind != DELETED:
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no finishing event for {path.name} within {timeout:g} s "
                    f"(settle time {SETTLE_S:g} s); events: {self.seen}; "
                    f"settler tracks: {sorted(self.w.settler._files)}"
                )
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.q.get(timeout=min(left, 0.2)))

    def quiet_for(self, seconds: float) -> list[FileEvent]:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.seen.append(self.q.get(timeout=left))
            except queue.Empty:
                break
        return self.seen

    def tracked(self, path: Path) -> bool:
        return str(path) in self.w.settler._files


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path, "inotify")
    yield w
    w.w.stop()


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path, "poll")
    yield w
    w.w.stop()


def _made(folder: Path, sb: int = 0) -> Path:
    """A complete UVH5 file, closed, with a matching name."""
    p = folder / file_name(T0, sb)
    write_subband_file(p, T0, sb, SMALL)
    return p


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=60)


def _other_filesystem(than: Path) -> Path:
    """A folder on a different filesystem from ``than`` (tmpfs /dev/shm), for `mv` there."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(than).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move across")
    return Path(tempfile.mkdtemp(dir=shm))


# -- one test per style --------------------------------------------------------------------


def test_written_in_place_is_taken_at_close(watched: Watched) -> None:
    p = _made(watched.inbox)  # h5py: create, write, close
    ev = watched.event_for(p)
    assert ev.kind == READY
    assert not watched.tracked(p)


def test_a_file_whose_creation_is_handled_after_its_close_is_not_tracked_again(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loaded node: the handler reaches the file's IN_CREATE only after the writer has
    # written and closed it, so it is taken there (whole, no writer); the writer's
    # IN_MODIFY events still queued behind must not put it back under the settle watch
    # (this made test_written_in_place_is_taken_at_close fail under load)
    closed = threading.Event()

    def late_finished_link(path: str) -> os.stat_result | None:
        assert closed.wait(DEADLINE_S)
        return finished_link(path)

    monkeypatch.setattr(watcher_module, "finished_link", late_finished_link)
    tracked_after_touch: list[bool] = []
    touch = watched.w.settler.touch

    def spy(path: str) -> None:
        touch(path)
        tracked_after_touch.append(watched.tracked(Path(path)))

    monkeypatch.setattr(watched.w.settler, "touch", spy)
    p = _made(watched.inbox)
    closed.set()
    first = watched.event_for(p)
    assert first.kind == READY
    # the close, further down the queue, finishes it again (indexing is idempotent)
    wait_for(lambda: sum(e.path == str(p) for e in watched.quiet_for(0.1)) >= 2, DEADLINE_S)
    assert tracked_after_touch, "the writer's IN_MODIFY events were not handled"
    assert not any(tracked_after_touch)
    assert not watched.tracked(p)


def test_written_to_a_temp_name_and_renamed_is_taken_at_the_rename(watched: Watched) -> None:
    tmp = watched.inbox / (file_name(T0, 0) + ".tmp")
    write_subband_file(tmp, T0, 0, SMALL)
    assert all(e.path != str(tmp) for e in watched.quiet_for(0.3))  # not a candidate name
    final = tmp.with_name(file_name(T0, 0))
    os.rename(tmp, final)
    ev = watched.event_for(final)
    assert ev.kind == READY
    assert not watched.tracked(final)


def test_rsync_hidden_temp_then_rename_is_taken_at_the_rename(watched: Watched) -> None:
    # rsync's own sequence: hidden .name.XXXXXX in the destination, close, times, mode,
    # rename; the hidden name is never a candidate
    final = watched.inbox / file_name(T0, 0)
    tmp = watched.inbox / f".{final.name}.q8Zr1x"
    write_subband_file(tmp, T0, 0, SMALL)
    os.utime(tmp, (T0, T0))
    os.chmod(tmp, 0o644)
    os.rename(tmp, final)
    ev = watched.event_for(final)
    assert ev.kind == READY
    assert all(e.path != str(tmp) for e in watched.seen)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_real_rsync_is_taken_at_its_rename(watched: Watched) -> None:
    src = _made(watched.elsewhere)
    _run("rsync", "-t", str(src), str(watched.inbox) + "/")
    ev = watched.event_for(watched.inbox / src.name)
    assert ev.kind == READY


def test_mv_in_from_another_folder_is_taken_at_the_unpaired_moved_to(
    watched: Watched,
) -> None:
    src = _made(watched.elsewhere)  # same filesystem, outside every watch
    _run("mv", str(src), str(watched.inbox))
    dest = watched.inbox / src.name
    ev = watched.event_for(dest)
    assert ev.kind == READY
    assert ev.src_path == ""  # a move with no source inside the watch
    assert not watched.tracked(dest)


def test_cp_in_is_taken_at_close(watched: Watched) -> None:
    src = _made(watched.elsewhere)
    _run("cp", str(src), str(watched.inbox))
    dest = watched.inbox / src.name
    ev = watched.event_for(dest)
    assert ev.kind == READY
    assert dest.stat().st_size == src.stat().st_size


def test_mv_across_filesystems_is_taken_at_the_close_of_the_copy(watched: Watched) -> None:
    other = _other_filesystem(watched.inbox)
    try:
        src = _made(other)
        size = src.stat().st_size
        _run("mv", str(src), str(watched.inbox))  # copy, close, then unlink the source
        dest = watched.inbox / src.name
        ev = watched.event_for(dest)
        assert ev.kind == READY
        assert dest.stat().st_size == size and not src.exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_hard_link_of_a_finished_file_is_taken_at_its_creation(watched: Watched) -> None:
    src = _made(watched.elsewhere)
    _run("ln", str(src), str(watched.inbox))
    dest = watched.inbox / src.name
    ev = watched.event_for(dest)
    assert ev.kind == READY
    assert not watched.tracked(dest)


def test_hard_link_whose_original_is_removed_at_once_is_taken_at_its_creation(
    watched: Watched,
) -> None:
    src = _made(watched.elsewhere)
    dest = watched.inbox / src.name
    os.link(src, dest)
    os.unlink(src)  # before the watcher looks: one link left
    ev = watched.event_for(dest)
    assert ev.kind == READY


# -- writers without a finishing signal wait for the settle time -----------------------------


def test_hard_link_of_a_file_still_being_written_waits_for_the_settle_time(
    watched: Watched,
) -> None:
    src = watched.elsewhere / file_name(T0, 0)
    with open(src, "wb") as f:  # the writer still has it open
        f.write(b"\0" * 4096)
        f.flush()
        _run("ln", str(src), str(watched.inbox))
        dest = watched.inbox / src.name
        wait_for(lambda: watched.tracked(dest), DEADLINE_S, "the link was never seen")
        f.write(b"\0" * 4096)  # through the other link: inotify on our folder sees nothing
    events = watched.quiet_for(1.0)
    assert [e for e in events if e.path == str(dest)] == []
    assert watched.tracked(dest)


def test_writer_that_never_closes_waits_for_the_settle_time(watched: Watched) -> None:
    p = watched.inbox / file_name(T0, 0)
    with open(p, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        wait_for(lambda: watched.tracked(p), DEADLINE_S, "the new file was never seen")
        events = watched.quiet_for(1.0)
        assert [e for e in events if e.path == str(p)] == []


def test_polling_waits_for_the_settle_time_even_for_a_rename_in(polled: Watched) -> None:
    src = _made(polled.elsewhere)
    os.rename(src, polled.inbox / src.name)
    dest = polled.inbox / src.name
    wait_for(lambda: polled.tracked(dest), DEADLINE_S, "the poller never saw the file")
    events = polled.quiet_for(1.0)
    assert [e for e in events if e.path == str(dest)] == []


def test_mv_out_of_the_folder_is_a_deletion(watched: Watched) -> None:
    p = _made(watched.inbox)
    watched.event_for(p)
    _run("mv", str(p), str(watched.elsewhere))
    wait_for(
        lambda: any(e.kind == DELETED and e.path == str(p) for e in watched.quiet_for(0.2)),
        DEADLINE_S,
        lambda: f"no deletion event: {watched.seen}",
    )


# -- move pairing never stalls the watcher ---------------------------------------------------
HOLD_S = 120.0  # far past DEADLINE_S: a consumer that sat out a hold fails the test


def _moved(mask: int, name: bytes, cookie: int = 7) -> PathedInotifyEvent:
    return PathedInotifyEvent(InotifyEvent(1, mask, cookie, name), b"/in/" + name)


def _get_soon(q: _PromptQueue) -> object:
    """q.get() in a thread; what it returned within DEADLINE_S (AssertionError if none)."""
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    t.start()
    t.join(DEADLINE_S)
    if not got:
        q.close()
        raise AssertionError(f"the consumer was held back for more than {DEADLINE_S:g} s")
    return got[0]


def test_a_move_paired_while_the_consumer_waits_is_handed_over_at_once() -> None:
    # watchdog's own queue sleeps out the whole hold once it has seen the IN_MOVED_FROM at
    # its head, even after the IN_MOVED_TO paired it away: every rename inside the folder
    # could stall the events behind it by that much (0.5 s in watchdog)
    q = _PromptQueue(file_s=HOLD_S, dir_s=HOLD_S)
    src = _moved(InotifyConstants.IN_MOVED_FROM, b"x.tmp")
    dest = _moved(InotifyConstants.IN_MOVED_TO, b"x")
    q.put(src, delay=True)
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    consumer.start()
    # the consumer has seen the IN_MOVED_FROM at the head and waits (CPython's Condition)
    wait_for(lambda: q._not_empty._waiters, DEADLINE_S, "the consumer never waited")  # type: ignore[attr-defined]
    # what watchdog's grouper does when the IN_MOVED_TO comes
    assert q.remove(lambda e: e is src) is src
    q.put((src, dest))
    consumer.join(DEADLINE_S)
    assert got == [(src, dest)]


def test_an_unpaired_file_move_waits_only_the_file_hold() -> None:
    q = _PromptQueue(file_s=0.0, dir_s=HOLD_S)
    out = _moved(InotifyConstants.IN_MOVED_FROM, b"moved-out")  # its partner never comes
    after = _moved(InotifyConstants.IN_CLOSE_WRITE, b"next", cookie=0)
    q.put(out, delay=True)
    q.put(after)
    assert _get_soon(q) is out
    assert _get_soon(q) is after


def test_an_unpaired_directory_move_is_held_for_its_partner() -> None:
    # watchdog moves the watches below a directory only when it sees the pair
    q = _PromptQueue(file_s=0.0, dir_s=HOLD_S)
    d = _moved(InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_ISDIR, b"sub")
    q.put(d, delay=True)
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    consumer.start()
    consumer.join(0.5)
    assert got == [] and consumer.is_alive()
    q.close()  # stopping the watcher ends the wait
    consumer.join(DEADLINE_S)
    assert got == [None]


def test_files_behind_a_rename_in_the_folder_are_not_held_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a hold longer than the deadline, only a consumer woken by the pairing passes
    monkeypatch.setattr(prompt_inotify, "FILE_MOVE_PAIR_S", HOLD_S)
    w = Watched(tmp_path, "inotify")
    try:
        tmp = w.inbox / (file_name(T0, 0) + ".tmp")
        write_subband_file(tmp, T0, 0, SMALL)
        final = tmp.with_name(file_name(T0, 0))
        os.rename(tmp, final)
        assert w.event_for(final).kind == READY
        behind = _made(w.inbox, 1)
        assert w.event_for(behind).kind == READY
    finally:
        w.w.stop()


def test_the_kernel_is_asked_only_for_events_the_handler_uses(watched: Watched) -> None:
    # every read of a file (the daemon's own header reads among them) would otherwise send
    # IN_OPEN and IN_CLOSE_NOWRITE through three watchdog threads for nothing
    (obs,) = watched.w.observers.values()
    (emitter,) = obs.emitters
    mask = emitter._inotify.event_mask  # type: ignore[attr-defined]
    c = InotifyConstants
    assert not mask & (c.IN_OPEN | c.IN_CLOSE_NOWRITE)
    for needed in (c.IN_CLOSE_WRITE, c.IN_MOVED_TO, c.IN_MOVED_FROM, c.IN_CREATE, c.IN_DELETE):
        assert mask & needed
    assert mask & c.IN_MODIFY  # a writer that never closes: the settle clock restarts


# -- how a hard link is judged --------------------------------------------------------------


def test_open_for_writing_sees_a_writer_in_another_process(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    assert open_for_writing(str(p)) is False
    holder = subprocess.Popen(
        [sys.executable, "-c", f"f = open({str(p)!r}, 'ab'); print('open', flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert open_for_writing(str(p)) is True
    finally:
        holder.kill()
        holder.wait(10)
    assert open_for_writing(str(p)) is False
    assert open_for_writing(str(tmp_path / "missing")) is None


def test_finished_link_needs_data_and_no_writer(tmp_path: Path) -> None:
    made = _made(tmp_path)
    link = tmp_path / "linked.hdf5"
    os.link(made, link)
    assert finished_link(str(link)) and finished_link(str(made))
    with open(made, "ab"):  # its writer has it open: not finished, whichever name
        assert not finished_link(str(link))
    os.unlink(made)  # `ln` then `rm` of the original: one link left, still complete
    assert finished_link(str(link))
    empty = tmp_path / "empty.hdf5"
    empty.touch()
    assert not finished_link(str(empty))  # a writer starting
    with open(tmp_path / "new.hdf5", "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        assert not finished_link(f.name)  # a writer that has written but not closed
    sym = tmp_path / "sym.hdf5"
    sym.symlink_to(link)
    assert not finished_link(str(sym))
    assert not finished_link(str(tmp_path / "missing.hdf5"))


# -- the daemon end to end: one group, its files delivered in every style ------------------


def _styles(inbox: Path, elsewhere: Path, other_fs: Path | None) -> list[Callable[[int], None]]:
    def in_place(sb: int) -> None:
        write_subband_file(inbox / file_name(T0, sb), T0, sb, SMALL)

    def renamed(sb: int) -> None:
        tmp = inbox / f".{file_name(T0, sb)}.x1y2z3"
        write_subband_file(tmp, T0, sb, SMALL)
        os.rename(tmp, inbox / file_name(T0, sb))

    def tool(cmd: str, where: Path) -> Callable[[int], None]:
        def deliver(sb: int) -> None:
            src = where / file_name(T0, sb)
            write_subband_file(src, T0, sb, SMALL)
            _run(cmd, str(src), str(inbox))

        return deliver

    out = [in_place, renamed, tool("mv", elsewhere), tool("cp", elsewhere)]
    out.append(tool("ln", elsewhere))
    if other_fs is not None:
        out.append(tool("mv", other_fs))
    return out


def test_daemon_completes_a_group_delivered_in_every_style_without_settling(
    tmp_path: Path, daemon_factory
) -> None:
    site: Site = write_site(tmp_path / "site", watch="inotify")
    site.config_path.write_text(
        site.config_path.read_text().replace("settle_seconds = 0.5", f"settle_seconds = {SETTLE_S}")
    )
    assert site.cfg.watch.settle_seconds == SETTLE_S
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shm = Path("/dev/shm")
    other = (
        Path(tempfile.mkdtemp(dir=shm))
        if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev
        else None
    )
    try:
        d = daemon_factory(site)
        d.wait_ready()
        styles = _styles(site.incoming, elsewhere, other)
        for sb in range(16):
            styles[sb % len(styles)](sb)
        db = site.root / "state" / "hdf5.sqlite3"
        wait_for(
            lambda: db_count(db, "SELECT COUNT(*) FROM events WHERE type = 'group.complete'"),
            25,  # short of the 30 s settle time: only finishing events can get here
            lambda: d.log.read_text()[-3000:],
        )
        assert db_count(db, "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 1") == 16
        assert db_count(db, "SELECT COUNT(*) FROM rejected_files") == 0
        assert d.stop() == 0
    finally:
        if other is not None:
            shutil.rmtree(other, ignore_errors=True)


# -- a directory under a subband file's name (rejected live, like a FIFO) --------------------


@pytest.mark.parametrize("mode", ["inotify", "poll"])
@pytest.mark.parametrize("how", ["mkdir", "mv in"])
def test_a_directory_named_like_a_subband_file_is_handed_on_at_once(
    tmp_path: Path, mode: str, how: str
) -> None:
    w = Watched(tmp_path, mode)
    try:
        name = file_name(T0, 2)
        if how == "mkdir":
            _run("mkdir", str(w.inbox / name))
        else:
            (w.elsewhere / name).mkdir()
            _run("mv", str(w.elsewhere / name), str(w.inbox))
        ev = w.event_for(w.inbox / name)  # never the settle time: nothing settles
        assert ev.kind == READY
        (w.inbox / "not-a-subband").mkdir()  # other directories stay the watcher's own
        assert [e.path for e in w.quiet_for(1.0) if "not-a-subband" in e.path] == []
    finally:
        w.w.stop()


def test_daemon_rejects_a_directory_or_a_broken_link_named_like_a_file_live(
    tmp_path: Path, daemon_factory
) -> None:
    site: Site = write_site(tmp_path / "site", watch="inotify")
    d = daemon_factory(site)
    d.wait_ready()
    (site.incoming / file_name(T0, 2)).mkdir()
    os.symlink(site.root / "nonexistent", site.incoming / file_name(T0, 14))  # dangling
    os.symlink("loopB", site.incoming / file_name(T0, 15))  # a loop
    os.symlink(file_name(T0, 15), site.incoming / "loopB")
    db = site.root / "state" / "hdf5.sqlite3"
    wait_for(  # the periodic reconcile is 600 s away: only the live path gets here
        lambda: (
            db_count(db, "SELECT COUNT(*) FROM rejected_files WHERE reason = 'not_a_file'") == 3
        ),
        DEADLINE_S,
        lambda: d.log.read_text()[-3000:],
    )
    assert d.stop() == 0


@pytest.mark.parametrize("target", ["dangling", "loop"])
def test_a_symlink_that_resolves_nowhere_is_handed_on_at_once(
    watched: Watched, target: str
) -> None:
    """It never settles (there is nothing to stat): the indexer must see it now to reject
    it, as it does a FIFO (operator3 defect 3)."""
    name = watched.inbox / file_name(T0, 14)
    if target == "dangling":
        _run("ln", "-s", str(watched.elsewhere / "nonexistent"), str(name))
    else:
        _run("ln", "-s", "loopB", str(name))
        _run("ln", "-s", name.name, str(watched.inbox / "loopB"))
    assert watched.event_for(name).kind == READY
