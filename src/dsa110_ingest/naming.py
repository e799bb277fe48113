"""Subband file names: ``<UTC timestamp>_sb<NN>.hdf5``.

The name is the only thing known about a file before it is opened, so it decides
whether a file is a candidate at all, and gives the timestamp used for grouping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from dsa110_ingest.errors import MisnamedFileError
from dsa110_ingest.times import iso_to_unix

DEFAULT_PATTERN = r"(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(?P<index>\d{2})\.hdf5"

# Names that look like data files but are not matched by the pattern are rejected
# (an operator must hear about them); everything else is not ours and is ignored.
_DATA_SUFFIXES = (".hdf5", ".h5", ".uvh5")


@dataclass(frozen=True, slots=True)
class SubbandName:
    timestamp_iso: str
    timestamp_unix: float
    subband_num: int

    @property
    def subband_code(self) -> str:
        return subband_code(self.subband_num)


def subband_code(num: int) -> str:
    """``sbNN``: how names, events and messages spell subband ``num``."""
    return f"sb{num:02d}"


class NameParser:
    """Compiled once from the configured pattern; used per file on the hot path."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, expected_subbands: int = 16) -> None:
        self.pattern = pattern
        self._re = re.compile(pattern)
        self._tail = re.compile(f"(?:{pattern})\\Z")
        # `_SB01.HDF5`: one of ours in the wrong case, to reject with the reason, not skip
        self._tail_any_case = re.compile(f"(?:{pattern})\\Z", re.IGNORECASE)
        self._any_case = re.compile(pattern, re.IGNORECASE)
        self.expected_subbands = expected_subbands

    def is_candidate(self, filename: str) -> bool:
        """A name we should look at: hidden, temp and foreign files are skipped."""
        if filename.startswith("."):
            return False  # rsync temp names, .fuse_hidden*, editor swap files
        # trailing whitespace stripped: a newline after ".hdf5" makes a name we must reject
        # (and say so), not one we silently skip
        name = filename.rstrip()
        return (
            name.lower().endswith(_DATA_SUFFIXES)
            or self._tail.search(name) is not None
            or self._tail_any_case.search(name) is not None
        )

    def parse(self, path: str, filename: str) -> SubbandName:
        if not is_utf8(filename):
            raise MisnamedFileError(
                path_text(path),
                f"name {quoted(filename)} is not valid UTF-8",
                "rename it to <YYYY-MM-DDTHH:MM:SS>_sb<NN>.hdf5",
            )
        # the whole name: a `$` would accept a trailing newline, `search` any prefix
        m = self._re.fullmatch(filename)
        if m is None and self._any_case.fullmatch(filename) is not None:
            raise MisnamedFileError(
                path,
                f"name {quoted(filename)} differs from the subband pattern only in upper/lower "
                "case: the correlator writes `_sb<NN>.hdf5` in lower case",
                "rename it to <YYYY-MM-DDTHH:MM:SS>_sb<NN>.hdf5 in exactly that case",
            )
        if m is None:
            raise MisnamedFileError(
                path,
                f"name {quoted(filename)} does not match the subband pattern `{self.pattern}`",
                "rename it to <YYYY-MM-DDTHH:MM:SS>_sb<NN>.hdf5 or set `pattern` in the config",
            )
        ts = m.group("timestamp")
        try:
            unix = iso_to_unix(ts)
        except ValueError:
            raise MisnamedFileError(
                path, f"timestamp {ts!r} in the name is not a valid UTC time", "fix the name"
            ) from None
        index = int(m.group("index"))
        if not 0 <= index < self.expected_subbands:
            raise MisnamedFileError(
                path,
                f"subband index {index} is outside 0..{self.expected_subbands - 1}",
                "check the file name or `[groups] expected_subbands`",
            )
        return SubbandName(ts, unix, index)


def is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_text(path: str) -> str:
    """``path`` as text that any database, log or terminal accepts.

    A name that is not UTF-8 has its undecodable bytes written as ``\\xNN``; the exact
    bytes are kept beside it (:func:`path_bytes`), so the name round-trips.
    """
    if is_utf8(path):
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """``text`` as it may be shown on a terminal or in a text report: control and other
    non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a file name
    cannot forge a line, move the cursor or reverse the text after it; bytes that are not
    UTF-8 as ``\\xNN`` (:func:`path_text`). Every text output that shows a path, a name or
    a message quoting one goes through here."""
    text = path_text(text)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def quoted(name: str) -> str:
    """A name inside a message, in single quotes and escaped once, the way
    :func:`printable` shows the path beside it (``'\xff\xfe_sb07.hdf5'``,
    ``'a\nb.hdf5'``): never ``repr``, which would escape the backslashes of those escapes
    a second time."""
    return f"'{printable(name)}'"


def path_bytes(path: str) -> bytes | None:
    """The exact bytes of a name that is not UTF-8 (None for the usual, UTF-8, case)."""
    return None if is_utf8(path) else os.fsencode(path)


def missing_subbands(present: Iterable[int], expected: int) -> list[str]:
    """The codes (``sb03``) of the subbands ``0 .. expected-1`` not in ``present``, in
    order: what a group lacks, as events, ``groups`` and ``ms_index`` name it."""
    have = set(present)
    return [f"sb{i:02d}" for i in range(expected) if i not in have]
