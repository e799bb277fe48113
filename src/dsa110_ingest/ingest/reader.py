"""Reading headers for the indexer: inline for a few files, a process pool for backfills.

h5py serialises all calls in one process behind a global lock, so threads do not help;
processes do. Results cross the process boundary as plain dataclasses (an exception with
a custom ``__init__`` does not survive pickling).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from dsa110_ingest.errors import FileLockedError, UVH5Error
from dsa110_ingest.uvh5 import HeaderInfo, read_header

INLINE_MAX = 48  # below this many files a pool's start-up and IPC cost more than they save


@dataclass(frozen=True, slots=True)
class ReadFailure:
    reason: str
    detail: str
    fix: str
    retryable: bool

    @property
    def message(self) -> str:
        return f"{self.detail} ({self.fix})" if self.fix else self.detail


def read_for_index(path: str, locking: str, lock_wait_s: float) -> HeaderInfo | ReadFailure:
    """Read one header; a writer's lock is waited out for up to ``lock_wait_s``."""

    @retry(
        retry=retry_if_exception_type(FileLockedError),
        stop=stop_after_delay(lock_wait_s),
        wait=wait_exponential(multiplier=0.02, max=1.0),
        reraise=True,
    )
    def attempt() -> HeaderInfo:
        return read_header(path, locking)

    try:
        return attempt()
    except UVH5Error as e:
        return ReadFailure(e.reason, e.detail, e.fix, e.retryable)


def _read_star(args: tuple[str, str, float]) -> HeaderInfo | ReadFailure:
    return read_for_index(*args)


class HeaderReader:
    def __init__(self, locking: str, workers: int = 0, lock_wait_s: float = 2.0) -> None:
        self.locking = locking
        self.workers = workers or (os.cpu_count() or 1)
        self.lock_wait_s = lock_wait_s
        self._pool: ProcessPoolExecutor | None = None

    def read_many(self, paths: Sequence[str]) -> Iterator[HeaderInfo | ReadFailure]:
        """Results in the order of ``paths``."""
        if len(paths) < INLINE_MAX or self.workers < 2:
            for p in paths:
                yield read_for_index(p, self.locking, self.lock_wait_s)
            return
        args = [(p, self.locking, self.lock_wait_s) for p in paths]
        chunk = max(1, min(64, len(paths) // (self.workers * 4)))
        done = 0
        try:
            for r in self._get_pool().map(_read_star, args, chunksize=chunk):
                yield r
                done += 1
        except BrokenProcessPool:
            # a reader died (OOM, or the HDF5 library crashing on a hostile file): find the
            # file that does it by reading the rest one at a time, and reject only that one
            self._reset()
            for a in args[done:]:
                try:
                    yield self._get_pool().submit(_read_star, a).result()
                except BrokenProcessPool:
                    self._reset()
                    yield ReadFailure(
                        "reader_crashed",
                        "reading this file killed the header-reader process",
                        "check it with h5dump; replace it with a good copy",
                        False,
                    )

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: the daemon has watchdog threads, and fork() with threads is unsafe
            ctx = multiprocessing.get_context("forkserver")
            # workers fork from a server that has imported h5py once, not each on its own
            ctx.set_forkserver_preload(["dsa110_ingest.ingest.reader"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
