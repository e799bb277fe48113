"""Walking storage locations: which files exist, with size and mtime, cheaply.

``os.scandir`` gives the stat of each entry without another system call on most
filesystems; a year of files is a few hundred thousand entries, listed in well under
a second when the DB already knows them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dsa110_ingest.config import is_under
from dsa110_ingest.errors import MisnamedFileError
from dsa110_ingest.naming import NameParser, SubbandName


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that may be a subband file, as seen on disk at one moment."""

    path: str
    filename: str
    size: int
    mtime_ns: int
    location_id: int
    name: SubbandName | None
    name_error: MisnamedFileError | None = None
    symlink_escape: bool = False

    @property
    def sort_key(self) -> tuple[float, int, str]:
        if self.name is None:
            return (float("inf"), 0, self.path)
        return (self.name.timestamp_unix, self.name.subband_num, self.path)


def make_candidate(
    path: str,
    filename: str,
    st: os.stat_result,
    location_id: int,
    parser: NameParser,
    roots: tuple[str, ...],
    is_link: bool = False,
) -> Candidate:
    try:
        name: SubbandName | None = parser.parse(path, filename)
        err = None
    except MisnamedFileError as e:
        name, err = None, e
    escape = False
    if is_link:
        real = os.path.realpath(path)
        escape = not any(is_under(real, r) for r in roots)
    return Candidate(path, filename, st.st_size, st.st_mtime_ns, location_id, name, err, escape)


def stat_path(
    path: str, location_id: int, parser: NameParser, roots: tuple[str, ...]
) -> Candidate | None:
    """A candidate for one path named by an event; None when it is not (or no longer) one."""
    filename = os.path.basename(path)
    if not parser.is_candidate(filename):
        return None
    try:
        lst = os.lstat(path)
        is_link = stat.S_ISLNK(lst.st_mode)
        st = os.stat(path) if is_link else lst
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # a directory named like a file is walked, not read; a FIFO never
    return make_candidate(path, filename, st, location_id, parser, roots, is_link)


def scan_tree(
    root: Path, recursive: bool, location_id: int, parser: NameParser, roots: tuple[str, ...]
) -> Iterator[Candidate]:
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if recursive and not e.name.startswith("."):
                            stack.append(e.path)
                        continue
                    if not parser.is_candidate(e.name):
                        continue
                    is_link = e.is_symlink()
                    if is_link and not e.is_file(follow_symlinks=True):
                        continue
                    if not is_link and not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=True)
                except OSError:
                    continue  # vanished between listing and stat
                yield make_candidate(e.path, e.name, st, location_id, parser, roots, is_link)
