"""The backups ``migrate`` writes before it changes anything.

A backup is written under a hidden temporary name (``.<db>.partial-backup-<time>.<pid>.
<boot>.<pidns>.<machine>.<host>``, the writing process as procs.py names it), synced to
disk, and only then hard-linked to ``<db>.bak-<time>`` (a link fails where that name
exists: never a check then a rename over a file that appeared meanwhile) and the
temporary name removed: a file of that name is always a complete copy. A run killed half
way leaves only the hidden partial file (and its ``-journal``), which the next run removes
once its writer is provably gone (names without the process fields, from older releases:
once no process here has the pid). Two runs in the same second cannot share a name: the
later one gets ``.2``, ``.3``, ...; the earliest backup (earliest time; in one second the
name without a suffix) is the state before any migration run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

from dsa110_ingest.db import IndexStore, ProductsStore
from dsa110_ingest.errors import MigrationError
from dsa110_ingest.procs import Proc, gone, pid_alive, this_process

_PARTIAL = re.compile(
    r"^\.(?P<db>.+)\.partial-backup-\d{8}T\d{6}Z\.(?P<pid>\d+)"
    r"(?:\.(?P<boot>[0-9a-f-]*)\.(?P<pidns>\d*)\.(?P<machine>[0-9a-f]*)\.(?P<host>[^/]+?))?"
    r"(-journal)?$"
)
# `.bak-<time>.N` names tried before giving up (N runs of migrate in one second)
_MAX_NAMES = 1000


def _writer_gone(m: re.Match[str]) -> bool:
    pid = int(m["pid"])
    if m["host"] is None:  # an older release's name: the pid alone
        return not pid_alive(pid)
    return gone(Proc(m["host"], pid, m["boot"] or None, m["pidns"] or None, m["machine"] or None))


def _partial_name(path: Path, stamp: str) -> Path:
    me = this_process()
    ident = ".".join(v or "" for v in me.fields().values())
    return path.with_name(f".{path.name}.partial-backup-{stamp}.{me.pid}.{ident}.{me.host}")


def remove_partial_backups(path: Path) -> list[Path]:
    """Remove the partial backups of ``path`` left by killed runs (a run still alive, or
    one we cannot judge, another container's, keeps its own); returns what was removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in sorted(path.parent.iterdir()):
        m = _PARTIAL.match(p.name)
        if m is None or m["db"] != path.name or not _writer_gone(m):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_backup(
    db: IndexStore | ProductsStore,
    path: Path,
    stamp: str,
    before_rename: Callable[[], None] = lambda: None,
) -> Path:
    """Back ``db`` (the database file ``path``) up to ``<path>.bak-<stamp>[.N]``, never
    overwriting an earlier backup, and return that name. ``before_rename`` runs between
    the copy and the rename (the tests' kill point)."""
    partial = _partial_name(path, stamp)
    partial.unlink(missing_ok=True)
    db.backup_to(partial)
    _fsync(partial)
    before_rename()
    dest = _link_unused(partial, path, stamp)
    partial.unlink()
    _fsync(dest.parent, directory=True)
    return dest


def _link_unused(partial: Path, path: Path, stamp: str) -> Path:
    """Give the complete backup ``partial`` the first free name ``<path>.bak-<stamp>[.N]``:
    a hard link fails where the name exists, so a file that appears meanwhile (another
    migrate, an operator's copy) is never overwritten."""
    for n in range(1, _MAX_NAMES + 1):
        dest = path.with_name(f"{path.name}.bak-{stamp}" + (f".{n}" if n > 1 else ""))
        try:
            os.link(partial, dest)
        except FileExistsError:
            continue
        except OSError as e:
            hint = (
                "this filesystem has no hard links: put the database on one that has"
                if e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV)
                else "fix that and run migrate again"
            )
            raise MigrationError(
                f"could not name the backup {dest} ({e.strerror}); nothing was migrated. The "
                f"complete backup is {partial}: {hint} (the next run removes that partial file)"
            ) from e
        return dest
    raise MigrationError(
        f"{_MAX_NAMES} backups named {path.name}.bak-{stamp}[.N] exist already in "
        f"{path.parent}; nothing was migrated: move old backups away and run migrate again"
    )
