"""The single-instance lock when its folder cannot take the lock file: one line naming the
file and the fix, never a crash report."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsa110_ingest import statedir
from dsa110_ingest.errors import IngestError
from dsa110_ingest.statedir import StateLock

from .conftest import write_site


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EROFS, "remount it read-write or set `state_dir` elsewhere"),
        (errno.EACCES, "writable by this user"),
        (errno.EPERM, "writable by this user"),
    ],
)
def test_a_lock_file_that_cannot_be_created_is_an_ingest_error_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    def refuse(path: Path, flags: int = 0) -> int:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(statedir, "open_private", refuse)
    lock = StateLock(tmp_path / "hdf5.sqlite3")
    with pytest.raises(IngestError) as e:
        lock.acquire()
    msg = str(e.value)
    assert f"cannot create the lock file {tmp_path / 'hdf5.sqlite3.lock'}" in msg
    assert os.strerror(code) in msg and fix in msg
    assert lock.fd is None


def test_other_os_errors_are_not_disguised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, flags: int = 0) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(statedir, "open_private", full)
    with pytest.raises(OSError) as e:
        StateLock(tmp_path / "hdf5.sqlite3").acquire()
    assert e.value.errno == errno.ENOSPC and not isinstance(e.value, IngestError)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` bind-mounted read-only onto itself (needs root; skipped elsewhere)."""
    ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {ok.stderr.decode().strip()}")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True
        )
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_run_on_a_read_only_state_dir_says_so_in_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root")
    site = write_site(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    with _read_only(state):
        p = site.cli("run", "--no-convert", "--log-format", "json", check=False)
    assert p.returncode == 1, p.stderr
    assert "service.crashed" not in p.stderr and "Traceback" not in p.stderr
    assert "cannot create the lock file" in p.stderr and "remount it read-write" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
