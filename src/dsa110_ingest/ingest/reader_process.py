"""One header-reader process as :class:`~.reader.HeaderReader` drives it: started as
``python -m dsa110_ingest.ingest.read_worker``, one file in flight, answers as JSON
lines on its stdout."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from typing import IO

from dsa110_ingest.errors import IngestError

READY = b"ready\n"


class ReaderProcess:
    """One reader process; at most one file in flight."""

    def __init__(self, target: str, locking: str, lock_wait_s: float, start_s: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsa110_ingest.ingest.read_worker",
                str(os.getpid()),
                target,
                locking,
                repr(lock_wait_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.task: int | None = None
        self.since = 0.0
        self.start_s = start_s
        self.ready = False  # its READY line is read at first use: start-up runs meanwhile

    def wait_ready(self) -> None:
        if self.ready:
            return
        line = self._wait_line(time.monotonic() + self.start_s)
        if line != READY.strip():
            self.kill()
            raise IngestError(
                f"a header-reader process did not start within {self.start_s:.0f} s "
                f"(got {line!r}); check that `{sys.executable} -m "
                "dsa110_ingest.ingest.read_worker` runs, and the node's load"
            )
        self.ready = True

    def _wait_line(self, until: float) -> bytes | None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                line = self.take_line()
                if line is not None:
                    return line
                left = until - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                if not self.fill():
                    return None

    def fill(self) -> bool:
        """Read what the process wrote; False at EOF (it died)."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def take_line(self) -> bytes | None:
        line, sep, rest = self.buf.partition(b"\n")
        if not sep:
            return None
        self.buf = rest
        return line

    def send(self, i: int, path: str) -> bool:
        self.task, self.since = i, time.monotonic()
        try:
            self.stdin.write(json.dumps(path).encode() + b"\n")
            self.stdin.flush()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.stdin.close()
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()  # EOF: the process exits on its own
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]


def stop_all(workers: list[ReaderProcess]) -> None:
    for w in workers:
        w.stop()
    workers.clear()
