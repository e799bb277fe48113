"""The backups ``migrate`` writes before it changes anything.

A backup is written under a hidden temporary name (``.<db>.partial-backup-<time>.<pid>``),
synced to disk, and only then renamed to ``<db>.bak-<time>``: a file of that name is
always a complete copy. A run killed half way leaves only the hidden partial file (and
its ``-journal``), which the next run removes. Two runs in the same second cannot share a
name: the later one gets ``.2``, ``.3``, ...; the earliest backup (earliest time; in one
second the name without a suffix) is the state before any migration run.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from dsa110_ingest.db import IndexStore, ProductsStore
from dsa110_ingest.procs import pid_alive

_PARTIAL = re.compile(r"^\.(?P<db>.+)\.partial-backup-\d{8}T\d{6}Z\.(?P<pid>\d+)(-journal)?$")


def remove_partial_backups(path: Path) -> list[Path]:
    """Remove the partial backups of ``path`` left by killed runs (a run still alive
    keeps its own); returns what was removed."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in sorted(path.parent.iterdir()):
        m = _PARTIAL.match(p.name)
        if m is None or m["db"] != path.name or pid_alive(int(m["pid"])):
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
    partial = path.with_name(f".{path.name}.partial-backup-{stamp}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    db.backup_to(partial)
    _fsync(partial)
    before_rename()
    dest = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while dest.exists():  # never overwrite an earlier backup
        n += 1
        dest = path.with_name(f"{path.name}.bak-{stamp}.{n}")
    os.replace(partial, dest)
    _fsync(dest.parent, directory=True)
    return dest
