"""The ownership claim file of an output_dir: its format, and reading and writing it
safely (convert/ownership.py decides what a claim means).

The file is made whole before it appears (written aside, then hard-linked into place,
which fails when a claim is there: two daemons starting at once get one winner; where the
filesystem has no hard links, O_EXCL), replaced atomically (rename) by a takeover, and
read without following a symbolic link, opening a FIFO or device, or reading more than a
claim can hold. Every field shown to a person is made printable and bounded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsa110_ingest.errors import OutputClaimError
from dsa110_ingest.naming import printable

CLAIM_NAME = ".dsa110-ingest-owner"
CLAIM_KIND = "dsa110-ingest output_dir claim"
MAX_BYTES = 64 * 1024  # a claim is ~400 bytes; anything larger is not one
FILE_MODE = 0o644  # whoever reads the Measurement Sets may see who writes them
TAKE_OVER = "dsa110-ingest claim-output --force"
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,128}")
# link() failing for these: the filesystem has no hard links; fall back to O_EXCL
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
# an empty claim younger than _EMPTY_YOUNG_S may be one being written (filesystems without
# hard links): read again for up to _EMPTY_GRACE_S before calling it empty
_EMPTY_GRACE_S = 2.0
_EMPTY_YOUNG_S = 10.0


@dataclass(frozen=True)
class Claim:
    """What the claim file says: the index, and where and when it was claimed."""

    index_id: str
    index: str  # the index's database (a path, or a URI without its password)
    host: str
    state_dir: str
    node: str
    created_at: float
    created_by: str  # the command that wrote it
    took_over_from: str | None = None

    def to_bytes(self) -> bytes:
        return (
            json.dumps({"claim": CLAIM_KIND, "version": 1, **asdict(self)}, indent=2) + "\n"
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Claim:
        """Raises ValueError saying what is wrong."""
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("claim") != CLAIM_KIND:
            raise ValueError(f'is JSON but not a dsa110-ingest claim (no "claim": "{CLAIM_KIND}")')
        index_id = d.get("index_id")
        if not isinstance(index_id, str) or not _ID.fullmatch(index_id):
            raise ValueError("names no valid index_id")
        created = d.get("created_at")
        return cls(
            index_id=index_id,
            index=_text(d.get("index")),
            host=_text(d.get("host")),
            state_dir=_text(d.get("state_dir")),
            node=_text(d.get("node")),
            created_at=float(created) if _plausible_time(created) else 0.0,
            created_by=_text(d.get("created_by")),
            took_over_from=_text(d["took_over_from"]) if d.get("took_over_from") else None,
        )

    def describe(self) -> str:
        """The claim for a person: which index, where, since when, by what."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at))
        return (
            f"index {self.index_id} ({self.index} on host {self.host}, state_dir "
            f"{self.state_dir}), claimed {when} by `{self.created_by}`"
        )


def _plausible_time(v: Any) -> bool:
    """A unix time a claim could hold (not NaN, infinite, negative or past year 5000)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 9.5e10


def _text(v: Any) -> str:
    """A display field of a claim from anywhere: text, printable, bounded."""
    return printable(str(v))[:1000] if v is not None else "?"


def claim_path(output_dir: Path) -> Path:
    return Path(output_dir) / CLAIM_NAME


# -- reading ------------------------------------------------------------------------------
def read_claim(path: Path) -> Claim | None:
    """The claim at ``path``; None when there is none. Raises OutputClaimError
    (``unreadable``) for anything that is not a readable claim, without following a
    symbolic link, opening a FIFO or device, or reading more than :data:`MAX_BYTES`."""
    deadline = time.monotonic() + _EMPTY_GRACE_S
    while True:
        try:
            raw = _read_regular(path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # (the output_dir is not a folder: making the claim says so)
        except OSError as e:
            raise unreadable(path, f"cannot be read ({e.strerror or e})") from None
        if raw.strip() or time.monotonic() >= deadline or not _young(path):
            break
        time.sleep(0.1)  # a claim being written where link() is not supported
    if not raw.strip():
        raise unreadable(path, "is empty")
    try:
        return Claim.from_bytes(raw)
    except ValueError as e:
        raise unreadable(path, str(e)) from None


def _young(path: Path) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime < _EMPTY_YOUNG_S
    except OSError:
        return False


def _read_regular(path: Path) -> bytes:
    st = os.lstat(path)
    _refuse_odd(path, st)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise unreadable(path, "is a symbolic link, not a claim file") from None
        raise
    try:
        _refuse_odd(path, os.fstat(fd))
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise unreadable(path, f"holds more than {MAX_BYTES} bytes, more than any claim")
    return b"".join(chunks)


def _refuse_odd(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        target = printable(os.readlink(path)) if path.is_symlink() else "?"
        raise unreadable(path, f"is a symbolic link (to {target}), not a claim file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "folder"
            if stat.S_ISDIR(st.st_mode)
            else "FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else ("socket" if stat.S_ISSOCK(st.st_mode) else "device")
        )
        raise unreadable(path, f"is a {kind}, not a regular file")
    if st.st_size > MAX_BYTES:
        raise unreadable(
            path, f"is {st.st_size} bytes, more than any claim ({MAX_BYTES} bytes at most)"
        )


def unreadable(path: Path, why: str) -> OutputClaimError:
    out = path.parent
    return OutputClaimError(
        f"the ownership claim {path} of [convert] output_dir {out} {why}; nothing is "
        "converted there until it is fixed (indexing and events go on). If no other "
        f"deployment converts into {out}, replace it with this index's claim: `{TAKE_OVER}` "
        '(docs/operations.md, "output_dir ownership")',
        "unreadable",
        why,
    )


# -- writing ------------------------------------------------------------------------------
def unwritable(path: Path, e: OSError) -> OutputClaimError:
    out = path.parent
    return OutputClaimError(
        f"cannot write the ownership claim {path} in [convert] output_dir {out}: "
        f"{e.strerror or e}; nothing is converted until the output_dir is claimed "
        f"(indexing and events go on). Make {out} writable by this user (the Measurement "
        "Sets are written there too), or claim it from a host that can: "
        "`dsa110-ingest claim-output`",
        "unwritable",
    )


def _write_aside(out: Path, data: bytes) -> Path:
    """``data`` whole and synced in a new file beside the claim; returns its path."""
    tmp = out / f"{CLAIM_NAME}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _sync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_claim(path: Path, claim: Claim) -> bool:
    """Put ``claim`` at ``path`` unless a claim is there; True when this call made it."""
    out = path.parent
    out.mkdir(parents=True, exist_ok=True)
    tmp = _write_aside(out, claim.to_bytes())
    try:
        os.link(tmp, path)  # atomic, and fails when the name exists
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        return _create_exclusive(path, claim.to_bytes())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _sync_dir(out)
    return True


def _create_exclusive(path: Path, data: bytes) -> bool:
    """For a filesystem without hard links: O_EXCL, then the content (a reader seeing it
    empty meanwhile waits, :func:`read_claim`)."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(path.parent)
    return True


def replace_claim(path: Path, claim: Claim) -> None:
    """Put ``claim`` at ``path`` in one step, whatever is there (a symbolic link there is
    replaced, never followed). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_aside(path.parent, claim.to_bytes())
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


# -- the lock of check-and-rename against a takeover (convert/ownership.py) ------------
# how long a takeover waits for MS being moved into place, or a move for a takeover (each
# holds the lock for a rename or two: milliseconds)
LOCK_WAIT_S = 60.0
# flock errors meaning "no locks here" (some network filesystems): go on unlocked
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class LockBusy(Exception):
    """The output_dir's ownership lock stayed held past the wait (something is stuck)."""


@contextlib.contextmanager
def output_lock(output_dir: Path, exclusive: bool, wait_s: float | None = None) -> Iterator[bool]:
    """An flock on the output_dir folder itself: shared while a conversion checks the
    claim and moves its MS into place (conversions do that at once), exclusive while a
    takeover reads and replaces the claim. So a takeover waits for a move in progress,
    and a move after the takeover sees it. Yields whether the lock is held (False: no
    folder yet, or a filesystem without locks). The folder, not a file in it: no file to
    make, none a person could replace, and the lock is the same through every path to
    it on this host. Raises LockBusy after ``wait_s`` (default :data:`LOCK_WAIT_S`)."""
    try:
        fd = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield False  # no folder (nothing is in it to move over) or none we may open
        return
    try:
        wait = LOCK_WAIT_S if wait_s is None else wait_s
        yield _flock(fd, exclusive, time.monotonic() + wait, output_dir)
    finally:
        os.close(fd)  # drops the lock


def _flock(fd: int, exclusive: bool, deadline: float, output_dir: Path) -> bool:
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    while True:
        try:
            fcntl.flock(fd, mode)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"the ownership lock of {output_dir} (an flock on the folder) is still "
                    "held after waiting for it"
                ) from None
            time.sleep(0.02)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            return False
