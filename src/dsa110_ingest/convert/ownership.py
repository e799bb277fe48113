"""Which index converts into an output_dir: a claim file in it, naming that index.

Conversion jobs are leased in the index, so daemons sharing one index (several nodes on
PostgreSQL) never convert a group twice. Two daemons with two indexes (two state_dirs on
SQLite) cannot see each other's leases: watching the same folder and writing the same
``[convert] output_dir``, both would convert every observation, racing on the same MS
path. So before its first conversion a converter claims the output_dir: the file
:data:`CLAIM_NAME` in it names the index (``IndexStore.index_id``, a random id made once
with the index). A claim naming our index is ours (a restart, another node of the shared
index); any other claim, or one that cannot be read or written, stops conversions there
(indexing and events go on) with a message naming both indexes and the fix. The claim is
never replaced silently: ``dsa110-ingest claim-output --force`` takes it over.

The file's format and its safe reading and writing are convert/claimfile.py's;
docs/operations.md ("output_dir ownership") is the operator's side.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from dsa110_ingest.config import Config, is_db_uri, redact_db
from dsa110_ingest.convert.claimfile import (
    TAKE_OVER,
    Claim,
    LockBusy,
    claim_path,
    create_claim,
    output_lock,
    read_claim,
    replace_claim,
    unreadable,
    unwritable,
)
from dsa110_ingest.errors import (
    OutputClaimError,
    OutputClaimLostError,
    TransientConversionError,
)

log = structlog.get_logger("dsa110_ingest.convert")

RECHECK_S = 30.0  # a running daemon reads its claim again this often (a takeover, a loss)
# ...and this often while conversions wait on it: the operator is fixing it
RECHECK_PROBLEM_S = 5.0


@dataclass(frozen=True)
class Identity:
    """This process's index, as a claim names it."""

    index_id: str
    index: str
    state_dir: str
    node: str

    @classmethod
    def of(cls, cfg: Config, index_id: str) -> Identity:
        return cls(index_id, redact_db(cfg.hdf5_db), str(cfg.state_dir), cfg.node)

    def claim(self, created_by: str, took_over_from: str | None = None) -> Claim:
        return Claim(
            index_id=self.index_id,
            index=self.index,
            host=socket.gethostname(),
            state_dir=self.state_dir,
            node=self.node,
            created_at=time.time(),
            created_by=created_by,
            took_over_from=took_over_from,
        )


def conflict(path: Path, theirs: Claim, mine: Identity) -> OutputClaimError:
    out = path.parent
    return OutputClaimError(
        f"[convert] output_dir {out} belongs to another index: its claim {path} names "
        f"{theirs.describe()}; this daemon's index is {mine.index_id} ({mine.index}). "
        "Two indexes converting into one output_dir would convert every observation "
        "twice, so nothing is converted there (indexing and events go on). Fix: give this "
        "deployment its own [convert] output_dir, or run it on that index (PostgreSQL, "
        "docs/scale-out.md); if that index is gone for good (rebuilt from scratch, "
        f"retired), take the claim over: `{TAKE_OVER}` (docs/operations.md, "
        '"output_dir ownership")',
        "conflict",
    )


def ensure_claim(output_dir: Path, mine: Identity, created_by: str) -> tuple[Claim, bool]:
    """Our claim on ``output_dir``, made when there is none: (claim, made now). Raises
    OutputClaimError when another index holds it or it cannot be read or written."""
    path = claim_path(output_dir)
    for _ in range(3):  # a claim removed between our failed link and our read: again
        theirs = read_claim(path)
        if theirs is None:
            made = mine.claim(created_by)
            try:
                # exclusive, as a takeover: a conversion of an index whose claim was
                # deleted by hand moves its MS in before this claim appears, not after
                with output_lock(output_dir, exclusive=True):
                    if create_claim(path, made):
                        return made, True
            except LockBusy as e:
                raise _busy(output_dir, e) from None
            except OSError as e:
                raise unwritable(path, e) from None
            continue
        if theirs.index_id != mine.index_id:
            raise conflict(path, theirs, mine)
        return theirs, False
    raise unreadable(path, "keeps appearing and disappearing (something removes it)")


def take_over(output_dir: Path, mine: Identity, created_by: str) -> tuple[Claim, str]:
    """Replace whatever claim is there by ours, atomically; (ours, what it replaced).
    Under the output_dir's lock, exclusive: an MS being moved into place under the old
    claim is in place first (:func:`place`)."""
    try:
        with output_lock(output_dir, exclusive=True):
            return _take_over(output_dir, mine, created_by)
    except LockBusy as e:
        raise _busy(output_dir, e) from None


def _busy(output_dir: Path, e: LockBusy) -> OutputClaimError:
    return OutputClaimError(
        f"cannot claim {output_dir}: {e} (a conversion moving its MS into place holds it "
        f"for milliseconds: something is stuck); try again (`{TAKE_OVER}` for a takeover)",
        "busy",
    )


def _take_over(output_dir: Path, mine: Identity, created_by: str) -> tuple[Claim, str]:
    path = claim_path(output_dir)
    try:
        old = read_claim(path)
        before, replaced = ("no claim", False) if old is None else (old.describe(), True)
    except OutputClaimError as e:
        before, replaced = f"a claim file that {e.detail}", True
    if path.is_dir() and not path.is_symlink():
        raise unreadable(path, "is a folder: remove it by hand (rmdir), then claim again")
    made = mine.claim(created_by, took_over_from=before if replaced else None)
    try:
        replace_claim(path, made)
    except OSError as e:
        raise unwritable(path, e) from None
    return made, before


def inspect(output_dir: Path, index_id: str | None, cfg: Config) -> tuple[Claim | None, str | None]:
    """Read-only (``status``, ``doctor``): (the claim or None, the problem or None). With
    no index id (an index not yet made or migrated) only an unreadable claim is one."""
    path = claim_path(output_dir)
    try:
        theirs = read_claim(path)
    except OutputClaimError as e:
        return None, str(e)
    if theirs is not None and index_id is not None and theirs.index_id != index_id:
        return theirs, str(conflict(path, theirs, Identity.of(cfg, index_id)))
    return theirs, None


def verdict(cfg: Config, index_id: str | None) -> tuple[str, str]:
    """``doctor``'s check of the claim: (OK / WARN / FAIL, what and the fix)."""
    out = cfg.convert.output_dir
    claim, problem = inspect(out, index_id, cfg)
    if problem:
        return "FAIL", problem
    if claim is None:
        probe = out
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if os.access(probe, os.W_OK | os.X_OK):
            return "OK", f"{out} not claimed yet: the first conversion claims it"
        return "FAIL", (
            f"{claim_path(out)} cannot be created: {probe} is not writable by this user, "
            "and conversions do not start until the output_dir is claimed: make it writable"
        )
    if index_id is None:
        return "WARN", (
            f"claimed by {claim.describe()}; this index has no identity yet (start the "
            f"daemon once to migrate it); if the claim is not this index's: `{TAKE_OVER}`"
        )
    return "OK", f"{out} is claimed by this index ({claim.describe()})"


class ClaimGuard:
    """The dispatcher's claim: checked (made when missing) before the first conversion
    and again every :data:`RECHECK_S`, so a takeover by another index stops this one and
    a claim fixed by the operator lets it start, without a restart. Logs each change."""

    def __init__(
        self,
        cfg: Config,
        index_id: str,
        *,
        created_by: str = "dsa110-ingest run",
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.output_dir = cfg.convert.output_dir
        self.mine = Identity.of(cfg, index_id)
        self.created_by = created_by
        self.clock = clock
        self.recheck_s = recheck_s
        self.problem: str | None = None
        self._checked_at: float | None = None

    def check(self) -> str | None:
        """Why conversions may not start now (None: the output_dir is ours)."""
        now = self.clock()
        every = self.recheck_s if self.problem is None else min(self.recheck_s, RECHECK_PROBLEM_S)
        if self._checked_at is not None and now - self._checked_at < every:
            return self.problem
        self._checked_at = now
        path = claim_path(self.output_dir)
        try:
            claim, made = ensure_claim(self.output_dir, self.mine, self.created_by)
        except OutputClaimError as e:
            if str(e) != self.problem:
                log.error(
                    "convert.output_dir_refused",
                    kind=e.kind,
                    output_dir=str(self.output_dir),
                    claim_file=str(path),
                    this_index_id=self.mine.index_id,
                    this_index=self.mine.index,
                    error=str(e),
                    fix=f"`{TAKE_OVER}` if the claiming index is gone for good; else its "
                    "own [convert] output_dir",
                )
            self.problem = str(e)
            return self.problem
        if made or self.problem is not None:
            log.info(
                "convert.output_dir_claimed" if made else "convert.output_dir_ours",
                output_dir=str(self.output_dir),
                claim_file=str(path),
                index_id=claim.index_id,
                claimed_by_host=claim.host,
            )
        self.problem = None
        return None


def live_holder(claim: Claim | None, cfg: Config) -> tuple[int, Path] | None:
    """The daemon of ``claim``'s index still running on this host: (its pid, the state_dir
    lock it holds; pid 0 when the lock is held but names no pid). None when the claim is
    another host's (not visible from here), its lock is free or gone, or the lock is this
    deployment's own (an index rebuilt in place: the holder is its daemon). Raises
    OutputClaimError when the lock cannot be read by this user (``unknown``): whether
    that daemon runs cannot be told, and a takeover must not guess."""
    from dsa110_ingest.nodes import state_path
    from dsa110_ingest.statedir import StateLock

    if claim is None or claim.host != socket.gethostname():
        return None
    # where that daemon's lock lives (nodes.state_path, from what the claim recorded)
    db = Path(claim.state_dir) / "index" if is_db_uri(claim.index) else Path(claim.index)
    theirs, ours = StateLock(db), StateLock(state_path(cfg))
    if os.path.realpath(theirs.path) == os.path.realpath(ours.path):
        return None
    try:
        pid = theirs.holder()
    except PermissionError as e:
        raise OutputClaimError(
            f"refused: cannot tell whether the daemon of index {claim.index_id} (state_dir "
            f"{claim.state_dir}) still runs on this host: its lock {theirs.path} cannot be "
            f"read by this user ({e.strerror}). Run `{TAKE_OVER}` as that daemon's user (or "
            "root), which can see whether it runs; stop that daemon first if it does",
            "unknown",
        ) from None
    except OSError:
        return None  # no lock where the claim says (its state_dir gone): no daemon there
    return None if pid is None else (pid, theirs.path)


def still_running(output_dir: Path, claim: Claim, pid: int, lock: Path) -> str:
    """Why ``claim-output --force`` refuses while the claiming index's daemon runs here."""
    who = f"pid {pid}" if pid else "a process (pid unknown)"
    return (
        f"refused: {output_dir} is claimed by index {claim.index_id}, whose daemon still "
        f"runs on this host: {who} holds the lock {lock} of its state_dir {claim.state_dir}. "
        "Taking the claim now would let the conversions it is running write into this "
        "output_dir beside this index's (the same observations converted twice). Stop that "
        f"daemon first (`systemctl stop` its unit, or `kill -TERM {pid or '<pid>'}`; "
        "`dsa110-ingest --config <its config> status` shows it), then run "
        f"`{TAKE_OVER}` again"
    )


def fence(cfg: Config, index_id: str) -> dict[str, str]:
    """What a conversion request carries (in its ``meta``) for :func:`assert_still_ours`."""
    return {"output_owner": index_id, "claim_file": str(claim_path(cfg.convert.output_dir))}


def place(meta: dict[str, Any], tmp: Path, final: Path) -> Path | None:
    """Move a finished, verified output from ``tmp`` to ``final`` if the output_dir's
    claim is still the one the conversion started under (:func:`assert_still_ours`),
    checking and renaming under the output_dir's lock (shared; a takeover takes it
    exclusive): no takeover on this host gets between the check and the rename. An
    output already at ``final`` (``--force``) is moved aside first and its new name
    returned, for the caller to remove once the lock is released."""
    path = meta.get("claim_file") if meta.get("output_owner") else None
    try:
        with output_lock(Path(path).parent if path else final.parent, exclusive=False):
            assert_still_ours(meta, final)
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.rename(final, old)
            os.rename(tmp, final)
            return old
    except LockBusy as e:
        raise TransientConversionError(
            f"{final} not moved into place: {e} (a takeover of the claim holds it; "
            "retried without using up an attempt)"
        ) from None


def assert_still_ours(meta: dict[str, Any], final: Path) -> None:
    """Right before a finished MS is moved to ``final``: raise OutputClaimLostError unless
    the output_dir's claim still names the index that started the conversion (or is
    gone: nobody else's). A takeover (``claim-output --force``) while it ran makes the MS
    the new owner's to write: ours is discarded, never swapped in over theirs.
    :func:`place` makes the check and the rename one step for takeovers on this host."""
    owner, path = meta.get("output_owner"), meta.get("claim_file")
    if not owner or not path:
        return  # a request from before the fence, or a caller with no claim to keep
    try:
        claim = read_claim(Path(path))
        # none at all: deleted by hand, nobody else's yet (the next check makes ours again)
        if claim is None or claim.index_id == owner:
            return
        now = claim.describe()
    except OutputClaimError as e:
        now = f"a claim file that {e.detail}"
    raise OutputClaimLostError(
        f"output_dir claim lost while converting: {path} now holds {now}, not this index "
        f"({owner}); the finished {final.name} was discarded, not moved over what the new "
        "owner writes there (it converts this observation). Nothing to do if the takeover "
        "was meant; else take the claim back with `claim-output --force` (retried then)"
    )
