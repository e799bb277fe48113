"""A second writer process: the subbands shared out between two processes, two cores.

Reading a block (h5py holds the GIL), the kernel and the tile writes of one process
overlap only partly; two processes share nothing but the tile files, where each subband's
channel range is its own tiles (convert/native/msfile.py: no tile is written by both).
The subbands are handed out one at a time from a pipe holding their indices, so a
process that was slowed (by the subtables, or by other work on the machine) simply takes
fewer. Each process keeps its own per-row weight extremes; the helper's are in shared
memory and merged by the parent once the helper is done.

Failures keep the writer's semantics: an exception in the helper is sent to the parent,
which raises it as the same class (permanent, transient or retried) after the helper
exits; a helper killed by a signal is a retried ``ConversionError``; the parent kills
and reaps the helper before it raises anything of its own; the helper dies with the
parent (PR_SET_PDEATHSIG), so a SIGKILLed conversion leaves no process writing.
Nothing here may run with another thread alive in the parent: the helper is forked
before the writer starts its reader and tile threads.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dsa110_ingest.errors import ConversionError

_INDEX = struct.Struct("<H")  # one subband index; a pipe read of it is atomic


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_processes() -> int:
    """2 when this process may use two CPUs and runs no other thread (a fork copies only
    the forking thread: a lock another thread holds would stay locked in the helper; a
    worker forked from the template, or started fresh, has none), else 1."""
    return 2 if cpus() >= 2 and threading.active_count() == 1 else 1


class SubbandQueue:
    """Subband indices, each taken by exactly one process (a pipe read is atomic)."""

    def __init__(self, n: int) -> None:
        if n * _INDEX.size > 4096:  # one write of at most PIPE_BUF: never blocks
            raise ValueError(f"{n} subbands do not fit one pipe write")
        self.fd, w = os.pipe()
        try:
            os.write(w, b"".join(_INDEX.pack(i) for i in range(n)))
        finally:
            os.close(w)  # an empty pipe then reads as EOF: the queue is done

    def take(self) -> Iterator[int]:
        while len(raw := os.read(self.fd, _INDEX.size)) == _INDEX.size:
            yield _INDEX.unpack(raw)[0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def shared_full(shape: tuple[int, ...], dtype: type, value: float) -> np.ndarray:
    """An array in memory shared with processes forked after this call."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(n, 1))  # anonymous and MAP_SHARED
    a = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    a.fill(value)
    return a


def _error_message(e: BaseException) -> dict[str, Any]:
    if isinstance(e, ConversionError):
        return e.to_json()
    if isinstance(e, OSError) and e.errno is not None:
        return {"oserror": e.errno, "error": str(e.strerror or e)}
    return {"error": f"{type(e).__name__}: {e}", "kind": "error"}


def _raise_from(msg: dict[str, Any]) -> None:
    if "oserror" in msg:  # the worker tells a full disk from other OSErrors by errno
        raise OSError(int(msg["oserror"]), f"{msg['error']} (in the writer's helper process)")
    raise ConversionError.from_json(msg)


class Helper:
    """``work`` run in a forked process; :meth:`join` waits and raises its error."""

    def __init__(self, work: Callable[[], None]) -> None:
        parent = os.getpid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child; its coverage is in its parent's tests
            os.close(r)
            _child(work, w, parent)
        os.close(w)
        self.pid: int | None = pid
        self.fd = r
        self.cpu_s = 0.0
        self.maxrss_kib = 0

    def join(self) -> None:
        """Wait for the helper; raise what it failed with (nothing if it succeeded)."""
        assert self.pid is not None
        chunks = []
        while chunk := os.read(self.fd, 65536):
            chunks.append(chunk)
        _, status, ru = os.wait4(self.pid, 0)
        self.pid = None
        os.close(self.fd)
        self.cpu_s, self.maxrss_kib = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
        if chunks:
            _raise_from(json.loads(b"".join(chunks)))
        if status != 0:
            how = (
                f"was killed by signal {os.WTERMSIG(status)}"
                if os.WIFSIGNALED(status)
                else f"exited with status {os.waitstatus_to_exitcode(status)}"
            )
            raise ConversionError(
                f"the native writer's helper process {how}; its subbands are not written "
                "(out of memory? see the kernel log): the conversion is retried"
            )

    def kill(self) -> None:
        """Stop the helper at once (the parent failed); its tiles are discarded with the
        temporary MS."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.wait4(self.pid, 0)
        self.pid = None
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _child(work: Callable[[], None], fd: int, parent: int) -> None:  # pragma: no cover
    code = 0
    try:
        from dsa110_ingest.convert.executor import die_with_parent

        die_with_parent()
        if os.getppid() != parent:  # the parent died before the prctl took hold
            os._exit(1)
        work()
    except BaseException as e:  # noqa: BLE001 -- sent to the parent, which raises it
        code = 1
        with contextlib.suppress(Exception):
            traceback.print_exc()
            data = json.dumps(_error_message(e)).encode()
            while data:
                data = data[os.write(fd, data) :]
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)
