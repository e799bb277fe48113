"""Read functions that a header-reader process runs in tests: real hangs and real crashes
(the reader pool's deadline and crash handling are about what the process does, so the
process really blocks or dies)."""

from __future__ import annotations

import os
import signal

from dsa110_ingest.ingest.reader import ReadFailure, read_for_index
from dsa110_ingest.uvh5 import HeaderInfo


def read_or_misbehave(path: str, locking: str, lock_wait_s: float) -> HeaderInfo | ReadFailure:
    """A name containing ``hang`` blocks forever in open() of a FIFO without a writer (what
    an external link to a FIFO did to the old reader); ``crash`` kills the process."""
    base = os.path.basename(path)
    if "hang" in base:
        fifo = path + ".fifo"
        if not os.path.exists(fifo):
            os.mkfifo(fifo)
        with open(fifo, "rb"):  # blocks: nobody ever opens the writing end
            pass
    if "crash" in base:
        os.kill(os.getpid(), signal.SIGSEGV)
    return read_for_index(path, locking, lock_wait_s)
