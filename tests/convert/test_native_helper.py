"""The native writer's helper process: the subbands shared by two processes, failures of
either half fail the conversion as one would, and no process outlives its parent.

The helper is a real forked process (faults are injected into the code it inherits);
the parent's SIGKILL is a real SIGKILL of a real process.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.convert import worker
from dsa110_ingest.convert.native import helper, mstemplate, reader, subtables, tiles
from dsa110_ingest.errors import ConversionError, PermanentConversionError
from dsa110_ingest.tools.simulate import SimParams

from .test_native_backend import _group, _request

pytest.importorskip("casacore.tables")


def test_the_queue_hands_each_subband_to_exactly_one_process() -> None:
    q = helper.SubbandQueue(16)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child half
        got = bytes(i for i in q.take())
        os.write(w, got)
        os._exit(0)
    os.close(w)
    mine = list(q.take())
    os.waitpid(pid, 0)
    theirs = list(os.read(r, 64))
    os.close(r)
    q.close()
    assert sorted(mine + theirs) == list(range(16))


def _inject_in_helper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault: Any) -> None:
    """``fault()`` runs in the helper when it reads its first block; the parent writes the
    subtables first and waits until then, so the helper surely takes a subband."""
    parent = os.getpid()
    marker = tmp_path / "helper-started"
    real_read, real_subtables = reader.read_rows, subtables.write_all

    def read_rows(*a: Any, **k: Any) -> Any:
        if os.getpid() != parent:
            marker.touch()
            fault()
        return real_read(*a, **k)

    def write_all(*a: Any, **k: Any) -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        real_subtables(*a, **k)

    monkeypatch.setattr(reader, "read_rows", read_rows)
    monkeypatch.setattr(subtables, "write_all", write_all)
    monkeypatch.setattr(helper, "default_processes", lambda: 2)


def _convert(tmp_path: Path) -> Path:
    files = _group(tmp_path / "in", SimParams(nants=5, nchan=4, ntimes=3))
    req = _request(files, out=str(tmp_path / "out" / "x.ms"))
    try:
        worker.run(req)
    finally:
        out = tmp_path / "out"
        # nothing half-written under the final name, no temporary left behind (only the
        # writer's MAIN templates, convert/native/mstemplate.py)
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert left in ([], [mstemplate.CACHE_DIR]), left
    return out


def _damaged() -> None:
    raise PermanentConversionError("sbXX: visdata damaged (injected)")


def test_a_permanent_failure_in_the_helper_stays_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inject_in_helper(monkeypatch, tmp_path, _damaged)
    with pytest.raises(PermanentConversionError, match="damaged \\(injected\\)"):
        _convert(tmp_path)


def test_a_full_disk_in_the_helper_is_an_oserror_with_its_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker tells a full disk (transient, no attempt used) by the errno."""
    parent = os.getpid()

    def write(*a: Any, **k: Any) -> None:
        if os.getpid() != parent:
            raise OSError(errno.ENOSPC, "No space left on device")

    _inject_in_helper(monkeypatch, tmp_path, lambda: None)
    monkeypatch.setattr(tiles.TileFiles, "write", write)
    files = _group(tmp_path / "in", SimParams(nants=5, nchan=4, ntimes=3))
    from dsa110_ingest.convert import plan as recipe
    from dsa110_ingest.convert.native import backend

    group = backend.plan_group(recipe.plan_for_request(_request(files)))
    with pytest.raises(OSError) as info:
        backend.write_ms(group, tmp_path / "x.ms", processes=2)
    assert info.value.errno == errno.ENOSPC and "helper" in str(info.value)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_helper_killed_by_a_signal_is_a_retried_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inject_in_helper(monkeypatch, tmp_path, _killed)
    with pytest.raises(ConversionError, match="killed by signal 9") as info:
        _convert(tmp_path)
    assert not info.value.permanent and info.value.counts


def test_a_failing_parent_kills_and_reaps_its_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids: list[int] = []
    real_init = helper.Helper.__init__

    def init(self: helper.Helper, work: Any) -> None:
        real_init(self, work)
        assert self.pid is not None
        pids.append(self.pid)

    def write_all(*a: Any, **k: Any) -> None:
        raise PermanentConversionError("subtables refused (injected)")

    monkeypatch.setattr(helper.Helper, "__init__", init)
    monkeypatch.setattr(subtables, "write_all", write_all)
    monkeypatch.setattr(helper, "default_processes", lambda: 2)
    with pytest.raises(PermanentConversionError, match="injected"):
        _convert(tmp_path)
    (pid,) = pids
    with pytest.raises(ChildProcessError):  # killed and reaped: not even a zombie left
        os.waitpid(pid, os.WNOHANG)


PARENT = """
import sys, time
from dsa110_ingest.convert.native import helper
h = helper.Helper(lambda: time.sleep(600))
print(h.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_helper_dies_with_a_sigkilled_parent() -> None:
    p = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    pid = int(p.stdout.readline())
    assert _alive(pid)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the helper outlived its SIGKILLed parent"


def test_no_helper_is_forked_beside_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork copies only the forking thread; with another thread alive the writer keeps
    to one process unless told otherwise."""
    import threading

    monkeypatch.setattr(helper, "cpus", lambda: 2)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert helper.default_processes() == 1
    finally:
        stop.set()
        t.join()
    monkeypatch.setattr(helper, "cpus", lambda: 1)
    assert helper.default_processes() == 1
