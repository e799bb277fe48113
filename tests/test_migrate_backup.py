"""migrate's backups never overwrite a file that appears under their name (review finding
7: a check, then a rename over the name), and a partial backup is removed only when its
writer is provably gone (finding 6). Real SQLite databases."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dsa110_ingest import migrate_backup
from dsa110_ingest.db import open_index_at
from dsa110_ingest.errors import MigrationError
from dsa110_ingest.migrate_backup import remove_partial_backups, write_backup
from dsa110_ingest.procs import boot_id, machine_id, pid_namespace

STAMP = "20261127T230000Z"


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "hdf5.sqlite3"
    open_index_at(path).close()
    return path


def _whole(p: Path) -> bool:
    c = sqlite3.connect(p)
    try:
        return c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        c.close()


def test_a_file_appearing_after_the_name_was_checked_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's file appears between the check of the name and the rename: with a
    hard link there is no such gap, the backup takes the next name."""
    path = _db(tmp_path)
    theirs = path.with_name(f"{path.name}.bak-{STAMP}")
    real_exists = Path.exists
    # any look at the name sees it free: it was, a moment before the operator's copy
    monkeypatch.setattr(Path, "exists", lambda self: self != theirs and real_exists(self))
    with open_index_at(path) as db:
        dest = write_backup(db, path, STAMP, lambda: theirs.write_text("the operator's own file"))
    assert theirs.read_text() == "the operator's own file"
    assert dest == path.with_name(f"{path.name}.bak-{STAMP}.2") and _whole(dest)
    assert not [p for p in tmp_path.iterdir() if ".partial-backup-" in p.name]


def test_two_backups_in_one_second_take_two_names(tmp_path: Path) -> None:
    path = _db(tmp_path)
    with open_index_at(path) as db:
        first = write_backup(db, path, STAMP)
        second = write_backup(db, path, STAMP)
    assert (first.name, second.name) == (f"{path.name}.bak-{STAMP}", f"{path.name}.bak-{STAMP}.2")
    assert _whole(first) and _whole(second)


def test_a_filesystem_without_hard_links_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _db(tmp_path)

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(migrate_backup.os, "link", no_links)
    with open_index_at(path) as db, pytest.raises(MigrationError) as e:
        write_backup(db, path, STAMP)
    msg = str(e.value)
    assert f"could not name the backup {path}.bak-{STAMP}" in msg
    assert "nothing was migrated" in msg and "has no hard links" in msg
    assert not list(tmp_path.glob("*.bak-*"))  # never a half-named backup


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(60)
    return p.pid


def test_a_partial_backup_is_removed_only_when_its_writer_is_provably_gone(
    tmp_path: Path,
) -> None:
    path = _db(tmp_path)
    pid, host = _dead_pid(), os.uname().nodename
    here = f"{boot_id()}.{pid_namespace()}.{machine_id() or ''}.{host}"
    elsewhere = f"{boot_id()}.4026530000.{machine_id() or ''}.{host}"  # another container
    names = {
        f".{path.name}.partial-backup-{STAMP}.{pid}.{here}": True,
        f".{path.name}.partial-backup-{STAMP}.{pid}.{here}-journal": True,
        f".{path.name}.partial-backup-{STAMP}.{os.getpid()}.{here}": False,  # alive
        f".{path.name}.partial-backup-{STAMP}.{pid}.{elsewhere}": False,
        f".{path.name}.partial-backup-{STAMP}.{pid}": True,  # an older release's name
    }
    for n in names:
        (tmp_path / n).write_bytes(b"partial")
    removed = {p.name for p in remove_partial_backups(path)}
    assert removed == {n for n, gone in names.items() if gone}
