"""The reader pool: every header read in a killable process, each with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsa110_ingest.errors import FileLockedError, TruncatedFileError
from dsa110_ingest.ingest.reader import (
    HeaderReader,
    ReadFailure,
    read_for_index,
    wait_out_writer_lock,
)
from dsa110_ingest.tools.simulate import write_file
from dsa110_ingest.uvh5 import HeaderInfo

from ..conftest import SMALL

TARGET = "tests.ingest.hang_targets:read_or_misbehave"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], seconds: float = 30) -> list[int]:
    until = time.monotonic() + seconds
    while time.monotonic() < until and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return [str(write_file(tmp_path, 1.76e9 + 10 * i, i % 16, SMALL)) for i in range(6)]


def test_a_hung_read_is_killed_at_the_deadline_and_the_rest_are_read(
    tmp_path: Path, files: list[str]
) -> None:
    hang = tmp_path / "hang-2025-10-02T00:00:00_sb00.hdf5"
    hang.write_bytes(b"x")
    paths = [*files[:3], str(hang), *files[3:]]
    reader = HeaderReader("best-effort", 2, lock_wait_s=0.1, deadline_s=3, target=TARGET)
    try:
        t0 = time.monotonic()
        out = list(reader.read_many(paths))
        took = time.monotonic() - t0
        assert [type(r) for r in out] == [HeaderInfo] * 3 + [ReadFailure] + [HeaderInfo] * 3
        assert out[3].reason == "read_timeout" and "killed" in out[3].detail
        # the killed reader was replaced: the next read works
        assert isinstance(next(reader.read_many(files[:1])), HeaderInfo)
    finally:
        reader.close()
    assert took < 300  # bounded by the deadline (generous: a loaded CI machine)


def test_a_reader_crash_rejects_only_that_file(tmp_path: Path, files: list[str]) -> None:
    crash = tmp_path / "crash-2025-10-02T00:00:00_sb00.hdf5"
    crash.write_bytes(b"x")
    reader = HeaderReader("best-effort", 1, target=TARGET)
    try:
        out = list(reader.read_many([files[0], str(crash), files[1]]))
    finally:
        reader.close()
    assert isinstance(out[0], HeaderInfo) and isinstance(out[2], HeaderInfo)
    assert isinstance(out[1], ReadFailure) and out[1].reason == "reader_crashed"


def test_results_keep_the_order_of_the_paths_with_many_readers(
    tmp_path: Path, files: list[str]
) -> None:
    paths = files * 10  # 60 files: more than INLINE_MAX, so the whole pool is used
    reader = HeaderReader("best-effort", 3)
    try:
        out = list(reader.read_many(paths))
        assert len(reader.pids()) == 1  # the backfill's extra readers are gone
    finally:
        reader.close()
    assert all(isinstance(r, HeaderInfo) for r in out)
    by_file = {p: r for p, r in zip(files, out[:6], strict=True)}
    assert [by_file[p] for p in paths] == out


def test_the_next_file_is_read_while_the_caller_indexes_this_one(files: list[str]) -> None:
    reader = HeaderReader("best-effort", 1)
    try:
        gen = reader.read_many(files[:4])
        first = next(gen)
        (w,) = reader._pool
        assert w.task == 1  # file 1 went to the reader before file 0 was handed back
        pid = w.proc.pid
        # the caller stops early (its transaction failed): the read in flight is waited
        # out and dropped, never taken for the next call's first file
        gen.close()
        later = list(reader.read_many(files[4:6]))
        assert reader.pids() == [pid]  # the same reader, drained, not killed
    finally:
        reader.close()
    assert first == read_for_index(files[0], "best-effort", 0.1)
    assert later == [read_for_index(p, "best-effort", 0.1) for p in files[4:6]]


def test_readers_go_with_close_and_with_their_owner(files: list[str]) -> None:
    reader = HeaderReader("best-effort", 1)
    list(reader.read_many(files[:1]))
    pids = reader.pids()
    assert pids and all(_alive(p) for p in pids)
    reader.close()
    assert _wait_gone(pids) == []
    reader = HeaderReader("best-effort", 1)
    list(reader.read_many(files[:1]))
    pids = reader.pids()
    del reader  # forgotten without close(): the finalizer stops the processes
    assert _wait_gone(pids) == []


def test_reader_processes_die_with_the_daemon(tmp_path: Path, files: list[str]) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the owner, and its reader processes go too."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dsa110_ingest.ingest.reader import HeaderReader\n"
        "r = HeaderReader('best-effort', 1)\n"
        "list(r.read_many(sys.argv[1:]))\n"
        "print(*r.pids(), flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, *files[:2]], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pids = [int(x) for x in owner.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        owner.kill()
        owner.wait()
    assert _wait_gone(pids) == []
    assert os.getpid() not in pids


def test_the_owner_hears_from_the_reader_while_a_read_hangs(tmp_path: Path) -> None:
    """The daemon pings systemd's watchdog from ``on_wait``: a hang being timed out must not
    look like a dead daemon."""
    hang = tmp_path / "hang-2025-10-02T00:00:00_sb00.hdf5"
    hang.write_bytes(b"x")
    calls: list[float] = []
    reader = HeaderReader("best-effort", 1, lock_wait_s=0.1, deadline_s=4, target=TARGET)
    reader.on_wait = lambda: calls.append(time.monotonic())
    try:
        (r,) = list(reader.read_many([str(hang)]))
    finally:
        reader.close()
    assert isinstance(r, ReadFailure) and r.reason == "read_timeout"
    assert len(calls) >= 3  # about once a second through a >= 5 s deadline


def test_the_writer_lock_wait_retries_only_a_lock_and_only_for_its_time() -> None:
    calls: list[float] = []

    @wait_out_writer_lock(0.3)
    def locked_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise FileLockedError("/d/f", "locked", "wait")
        return "read"

    assert locked_twice() == "read" and len(calls) == 3
    calls.clear()

    @wait_out_writer_lock(0.3)
    def always_locked() -> str:
        calls.append(time.monotonic())
        raise FileLockedError("/d/f", "locked", "wait")

    with pytest.raises(FileLockedError):
        always_locked()
    assert len(calls) >= 2 and calls[-1] - calls[0] < 30  # gave up: deferred, not waited on
    calls.clear()

    @wait_out_writer_lock(5.0)
    def damaged() -> str:
        calls.append(time.monotonic())
        raise TruncatedFileError("/d/f", "truncated", "write it again")

    with pytest.raises(TruncatedFileError):
        damaged()
    assert len(calls) == 1  # a damaged file is not read again


def test_a_writer_that_closes_within_the_wait_is_read_not_deferred(tmp_path: Path) -> None:
    p = write_file(tmp_path, 1.76e9, 0, SMALL)
    ready = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py,time,pathlib\nf=h5py.File({str(p)!r},'r+',locking=True)\n"
            f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(1.0)\nf.close()\n",
        ]
    )
    try:
        until = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < until:
            time.sleep(0.02)
        assert ready.exists(), "the lock holder did not start"
        r = read_for_index(str(p), "true", lock_wait_s=120)
    finally:
        holder.wait(60)
    assert isinstance(r, HeaderInfo) and r.n_ants == SMALL.nants
