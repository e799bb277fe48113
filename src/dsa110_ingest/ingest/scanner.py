"""Walking storage locations: which files exist, with size and mtime, cheaply.

``os.scandir`` gives the stat of each entry without another system call on most
filesystems; a year of files is a few hundred thousand entries, listed in well under
a second when the DB already knows them.
"""

from __future__ import annotations

import errno
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
    # what the entry is when it is not a regular file (a FIFO, a directory, a symlink
    # loop...): rejected under its name, never opened
    not_a_file: str | None = None

    @property
    def readable(self) -> bool:
        """Whether its header is to be read (never a misnamed file, an escaping link, or
        anything but a regular file)."""
        return self.name is not None and not self.symlink_escape and self.not_a_file is None

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
    except OSError:
        return None  # gone again
    is_link = stat.S_ISLNK(lst.st_mode)
    try:
        st = os.stat(path) if is_link else lst
    except OSError as e:
        return _not_a_file(path, filename, lst, location_id, parser, _broken_link(e))
    if not stat.S_ISREG(st.st_mode):
        what = ("a symlink to " if is_link else "") + _kind(st.st_mode)
        return _not_a_file(path, filename, lst, location_id, parser, what)
    return make_candidate(path, filename, st, location_id, parser, roots, is_link)


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _broken_link(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symlink loop"
    if e.errno == errno.ENOENT:
        return "a dangling symlink (its target does not exist)"
    return f"a symlink whose target cannot be read ({e.strerror})"


def _not_a_file(
    path: str, filename: str, lst: os.stat_result, location_id: int, parser: NameParser, what: str
) -> Candidate:
    """A name ending in .hdf5 on something that is not a regular file: a candidate to
    reject (with the entry's own size and mtime, so an unchanged one is not redone)."""
    try:
        name: SubbandName | None = parser.parse(path, filename)
    except MisnamedFileError:
        name = None
    return Candidate(
        path, filename, lst.st_size, lst.st_mtime_ns, location_id, name, not_a_file=what
    )


def _entry(
    e: os.DirEntry[str], location_id: int, parser: NameParser, roots: tuple[str, ...]
) -> Candidate | None:
    """The candidate of one listed entry named like a subband file; None when it vanished.
    A regular file costs what it did (the listing's type, one stat); only the rare odd
    entry costs an lstat more."""
    is_link = e.is_symlink()
    try:
        st = e.stat(follow_symlinks=True)
    except OSError as err:
        if not is_link:
            return None  # vanished between listing and stat
        try:
            lst = e.stat(follow_symlinks=False)
        except OSError:
            return None  # the link itself is gone
        return _not_a_file(e.path, e.name, lst, location_id, parser, _broken_link(err))
    if not stat.S_ISREG(st.st_mode):
        what = ("a symlink to " if is_link else "") + _kind(st.st_mode)
        try:
            lst = e.stat(follow_symlinks=False) if is_link else st
        except OSError:
            return None
        return _not_a_file(e.path, e.name, lst, location_id, parser, what)
    return make_candidate(e.path, e.name, st, location_id, parser, roots, is_link)


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
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    continue  # vanished between listing and stat
                if is_dir and recursive and not e.name.startswith("."):
                    stack.append(e.path)  # walked even when named like a file
                if not parser.is_candidate(e.name):
                    continue
                # every entry named like a subband file is a candidate: one that is not a
                # regular file is rejected by name, never silently skipped
                cand = _entry(e, location_id, parser, roots)
                if cand is not None:
                    yield cand
