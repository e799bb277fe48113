"""Reading headers for the indexer, always in reader processes, each file with a deadline.

Nothing in a storage folder is opened by the daemon itself: a file can hang a read (an
external link to a FIFO, a stalled NFS server), crash the HDF5 library or ask for more
memory than the node has. A reader process is killed at the deadline and replaced, the
file rejected with a reason, and the daemon's loop goes on.

h5py serialises all calls in one process behind a global lock, so threads would not help
with throughput either; processes do. Workers are plain ``python -m`` children (no
multiprocessing forkserver or resource tracker to outlive the daemon), they die with
the daemon (``PR_SET_PDEATHSIG``, and EOF on their stdin), and results come back as JSON
lines: a reader that a hostile file subverted cannot hand the daemon a pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import json
import os
import selectors
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from dsa110_ingest.errors import FileLockedError, IngestError, UVH5Error
from dsa110_ingest.ingest.reader_process import READY, ReaderProcess, stop_all
from dsa110_ingest.uvh5 import HeaderInfo, read_header

INLINE_MAX = 48  # below this many files one reader process is enough
DEFAULT_TARGET = "dsa110_ingest.ingest.reader:read_for_index"


@dataclass(frozen=True, slots=True)
class ReadFailure:
    reason: str
    detail: str
    fix: str
    retryable: bool

    @property
    def message(self) -> str:
        return f"{self.detail} ({self.fix})" if self.fix else self.detail


def wait_out_writer_lock(lock_wait_s: float):  # type: ignore[no-untyped-def]
    """Retry a header read while its writer holds the HDF5 file lock: waits of 20 ms
    growing to 1 s, for ``lock_wait_s`` in all, since a writer closes within seconds.
    Not ``busy_retry``: that waits out a busy database (minutes, then the write fails);
    a file still locked after this is deferred (``ReadFailure.retryable``), not failed."""
    return retry(
        retry=retry_if_exception_type(FileLockedError),
        stop=stop_after_delay(lock_wait_s),
        wait=wait_exponential(multiplier=0.02, max=1.0),
        reraise=True,
    )


def read_for_index(path: str, locking: str, lock_wait_s: float) -> HeaderInfo | ReadFailure:
    """Read one header; a writer's lock is waited out for up to ``lock_wait_s``."""

    @wait_out_writer_lock(lock_wait_s)
    def attempt() -> HeaderInfo:
        return read_header(path, locking)

    try:
        try:
            # the retrying wrapper only once a lock was met: built and entered for every
            # file it cost a fifth of a header read
            return read_header(path, locking)
        except FileLockedError:
            return attempt()
    except UVH5Error as e:
        return ReadFailure(e.reason, e.detail, e.fix, e.retryable)


# -- the wire format: one JSON object a line, both ways -----------------------------------
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (HeaderInfo, ReadFailure)}


def _encode(r: HeaderInfo | ReadFailure) -> dict[str, Any]:
    # not dataclasses.asdict: its deep copy of every value cost more than the JSON
    kind = "header" if isinstance(r, HeaderInfo) else "failure"
    return {"kind": kind, **{name: getattr(r, name) for name in _FIELDS[type(r)]}}


def _decode(d: dict[str, Any]) -> HeaderInfo | ReadFailure:
    kind = d.pop("kind")
    if kind == "header":
        d["polarizations"] = tuple(d["polarizations"])
        return HeaderInfo(**d)
    return ReadFailure(**d)


def _failure(reason: str, detail: str, fix: str, retryable: bool = False) -> ReadFailure:
    return ReadFailure(reason, detail, fix, retryable)


def die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: SIGKILL when the daemon dies, even by SIGKILL (no orphans)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before the prctl took effect
        os._exit(0)


def worker_main(parent: int, target: str, locking: str, lock_wait_s: float) -> int:
    die_with_parent(parent)
    mod, _, fn_name = target.partition(":")
    fn = getattr(importlib.import_module(mod), fn_name)
    # h5py's and numpy's import leave ~100k objects that every full collection would
    # walk again (tens of ms, in the middle of some file's read): exempt them
    gc.freeze()
    out = sys.stdout.buffer
    out.write(READY)
    out.flush()
    for line in sys.stdin.buffer:
        path = json.loads(line)
        try:
            r = fn(path, locking, lock_wait_s)
        except Exception as e:  # noqa: BLE001 - any failure on one file is that file's reject
            r = _failure(
                "reader_error",
                f"reading raised {type(e).__name__}: {e}",
                "check the file with h5dump; replace it with a good copy",
            )
        out.write(json.dumps(_encode(r)).encode() + b"\n")
        out.flush()
    return 0


class HeaderReader:
    def __init__(
        self,
        locking: str,
        workers: int = 0,
        lock_wait_s: float = 2.0,
        deadline_s: float = 30.0,
        *,
        target: str = DEFAULT_TARGET,
        start_s: float = 120.0,
    ) -> None:
        self.locking = locking
        self.workers = workers or (os.cpu_count() or 1)
        self.lock_wait_s = lock_wait_s
        # a wait for a writer's lock must not count as a hang
        self.deadline_s = max(deadline_s, lock_wait_s + 5.0)
        self.target = target
        self.start_s = start_s
        self._pool: list[ReaderProcess] = []
        # called about once a second while reads are outstanding: the daemon pings systemd's
        # watchdog from it, because hung reads being killed one after another are progress
        self.on_wait: Callable[[], None] | None = None
        # an owner that forgets close() (a test, an API caller) leaves no process behind
        self._finalizer = weakref.finalize(self, stop_all, self._pool)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._pool]

    def start(self) -> None:
        """Start the live path's reader process now, without waiting for it: the first
        file then does not pay for a Python start and the h5py import (~0.4 s, seconds
        on a loaded node)."""
        if not self._pool:
            self._spawn()

    def _spawn(self) -> ReaderProcess:
        w = ReaderProcess(self.target, self.locking, self.lock_wait_s, self.start_s)
        self._pool.append(w)
        return w

    def _drop(self, w: ReaderProcess) -> None:
        w.kill()
        self._pool.remove(w)

    def read_many(self, paths: Sequence[str]) -> Iterator[HeaderInfo | ReadFailure]:
        """Results in the order of ``paths``; a file still unread at the deadline is a
        ``read_timeout`` failure and its reader process is killed."""
        if not paths:
            return
        want = 1 if len(paths) < INLINE_MAX or self.workers < 2 else self.workers
        while len(self._pool) < min(want, len(paths)):
            self._spawn()
        results: dict[int, HeaderInfo | ReadFailure] = {}
        todo = iter(enumerate(paths))
        busy: dict[int, ReaderProcess] = {}  # fd -> worker with a task
        with selectors.DefaultSelector() as sel:
            try:
                yield from self._serve(paths, todo, results, sel, busy)
            finally:
                # a caller that stopped early (its transaction failed) leaves reads in
                # flight: their answers must not be taken for the next call's files
                for w in list(busy.values()):
                    self._settle(w)
        if len(self._pool) > 1:
            # a backfill's readers go once it is done; one stays for the live path
            for w in self._pool[1:]:
                w.stop()
            del self._pool[1:]

    def _serve(
        self,
        paths: Sequence[str],
        todo: Iterator[tuple[int, str]],
        results: dict[int, HeaderInfo | ReadFailure],
        sel: selectors.BaseSelector,
        busy: dict[int, ReaderProcess],
    ) -> Iterator[HeaderInfo | ReadFailure]:
        nxt = 0
        last_ping = 0.0
        exhausted = False
        while True:
            # hand a file to every idle worker, before yielding what is done: the next
            # header is read while the caller indexes this one (a pipeline even with the
            # live path's single reader)
            for w in list(self._pool):
                if exhausted or w.task is not None:
                    continue
                try:
                    w.wait_ready()
                except IngestError:
                    self._pool.remove(w)
                    raise
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                if not w.send(*item):
                    self._lost(w, results, sel, busy)
                    continue
                busy[w.fd] = w
                sel.register(w.fd, selectors.EVENT_READ)
            while nxt in results:
                yield results.pop(nxt)
                nxt += 1
            if nxt >= len(paths):
                return
            if not busy and not exhausted:
                self._spawn()  # every worker was lost: start one again
                continue
            now = time.monotonic()
            wait = min((w.since + self.deadline_s for w in busy.values()), default=now) - now
            if self.on_wait is not None:
                if now - last_ping >= 1.0:
                    self.on_wait()
                    last_ping = now
                wait = min(wait, 1.0)
            for key, _ in sel.select(max(0.0, wait)):
                w = busy[key.fd]  # type: ignore[index]
                if not w.fill():
                    self._lost(w, results, sel, busy)
                    continue
                line = w.take_line()
                if line is not None:
                    assert w.task is not None
                    results[w.task] = self._parse(line)
                    w.task = None
                    sel.unregister(w.fd)
                    del busy[w.fd]
            now = time.monotonic()
            for w in [w for w in busy.values() if now - w.since >= self.deadline_s]:
                assert w.task is not None
                results[w.task] = _failure(
                    "read_timeout",
                    f"reading the header did not finish within {self.deadline_s:.0f} s "
                    "(a hung filesystem, or a link to a FIFO or device); the reader "
                    "was killed",
                    "check the file and its filesystem; it is tried again when it changes",
                )
                sel.unregister(w.fd)
                del busy[w.fd]
                self._drop(w)

    def _settle(self, w: ReaderProcess) -> None:
        """Wait out (and drop) the answer of a read nobody wants any more, so the worker
        is idle for the next call; one that does not answer in time is replaced."""
        line = w.take_line() or w._wait_line(w.since + self.deadline_s)
        if line is None:
            self._drop(w)
        else:
            w.task = None

    def _lost(
        self,
        w: ReaderProcess,
        results: dict[int, HeaderInfo | ReadFailure],
        sel: selectors.BaseSelector,
        busy: dict[int, ReaderProcess],
    ) -> None:
        """The process died under a file (the HDF5 library crashing on it, or the OOM
        killer): reject only that file."""
        if w.fd in busy:
            sel.unregister(w.fd)
            del busy[w.fd]
        if w.task is not None:
            results[w.task] = _failure(
                "reader_crashed",
                "reading this file killed the header-reader process",
                "check it with h5dump; replace it with a good copy",
            )
        self._drop(w)

    @staticmethod
    def _parse(line: bytes) -> HeaderInfo | ReadFailure:
        try:
            return _decode(json.loads(line))
        except (ValueError, TypeError, KeyError):
            return _failure(
                "reader_error",
                "the header-reader process answered garbage for this file",
                "check it with h5dump; replace it with a good copy",
            )

    def close(self) -> None:
        stop_all(self._pool)
