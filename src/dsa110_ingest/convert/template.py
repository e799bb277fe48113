"""The conversion template: a long-lived process that has imported the worker's modules
once and forks one child per conversion (``python -m dsa110_ingest.convert.template FD``).

A fresh ``python -m dsa110_ingest.convert.worker`` spends ~0.5 s (and far more on a
loaded machine) importing numpy, h5py, python-casacore, pyerfa and the writer before it
reads a byte; the template pays that once. Each child is still one conversion in its own
process, exactly as a fresh worker: the request on its stdin, the result line on its
stdout, the converter's output on its stderr, its exit status; a crash, hang or OOM kill
of a child fails only its group.

Protocol on the control socket (SOCK_SEQPACKET, one JSON message per packet):
  daemon -> template  ``{"token": n}`` with three fds: the child's stdin, stdout, stderr
  template -> daemon  ``{"ready": pid}`` once the imports are done
                      ``{"token": n, "pid": p}`` with a pidfd of the child (signals sent
                      through it cannot reach a recycled pid), or ``{"token": n, "error"}``
                      ``{"pid": p, "status": s, "cpu_s", "maxrss_kib"}`` when it is reaped
Death: the template dies with the daemon (PR_SET_PDEATHSIG), each child with the template.
Nothing here starts a thread before forking: a fork copies only the forking thread, and
a lock held by another thread would stay locked in the child for ever.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

# what a conversion imports, by the configured backend, loaded once here; for "native"
# numba and the writer's kernel too (_preload), which a fresh worker loads only for
# groups of >= 2 GiB of DATA (~0.9 s). A site command needs only the worker: loading
# casacore and numba for it would only delay the daemon's first conversion.
WORKER = ("dsa110_ingest.convert.worker", "dsa110_ingest.convert.command_backend")
MS = ("numpy", "h5py", "erfa", "casacore.tables", *WORKER)
PRELOAD: dict[str, tuple[str, ...]] = {
    "native": (*MS, "dsa110_ingest.convert.native.backend"),
    "pyuvdata": (*MS, "dsa110_ingest.convert.pyuvdata_backend"),
    "command": WORKER,
}
MAX_MSG = 65536


def _preload(backend: str) -> list[str]:
    import importlib

    missing = []
    for name in PRELOAD.get(backend, WORKER):
        try:
            importlib.import_module(name)
        except ImportError:  # the backend that needs it says so in the child, as before
            missing.append(name)
    if backend != "native":
        return missing
    try:
        from dsa110_ingest.convert.native import fused

        if not fused.warm():  # compiled or loaded from numba's cache, once
            missing.append("numba")
    except ImportError:
        missing.append("numba")
    return missing


def _child(fds: list[int], sock: socket.socket, wake: tuple[int, int], template: int) -> None:
    """In the forked child: become a worker process on the given stdio; never returns."""
    rc = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh worker's
        sock.close()
        for fd in wake:
            os.close(fd)
        from dsa110_ingest.convert.executor import die_with_parent

        die_with_parent()
        if os.getppid() != template:  # the template died before the prctl took hold
            os._exit(1)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        from dsa110_ingest.convert import worker

        rc = worker.main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 -- reported on the child's stderr, status 1
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(rc)


def _send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _fork(sock: socket.socket, msg: dict[str, Any], fds: list[int], wake: tuple[int, int]) -> None:
    token = msg.get("token")
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        _send(sock, {"token": token, "error": f"expected 3 fds, got {len(fds)}"})
        return
    try:
        pid = os.fork()
    except OSError as e:  # EAGAIN / ENOMEM: this conversion cannot start now
        for fd in fds:
            os.close(fd)
        _send(sock, {"token": token, "error": f"fork failed: {e}"})
        return
    if pid == 0:
        _child(fds, sock, wake, os.getppid())
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)  # the child is not reaped before this loop's next wait4
    try:
        _send(sock, {"token": token, "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(
            sock,
            {
                "pid": pid,
                "status": os.waitstatus_to_exitcode(status),
                "cpu_s": ru.ru_utime + ru.ru_stime,
                "maxrss_kib": ru.ru_maxrss,
            },
        )


def serve(fd: int, backend: str) -> int:
    from dsa110_ingest.convert.executor import die_with_parent

    die_with_parent()
    sock = socket.socket(fileno=fd)
    t0 = time.monotonic()
    from dsa110_ingest.convert.worker import keep_freed_memory

    keep_freed_memory()  # before the imports: the children inherit malloc's settings
    missing = _preload(backend)
    wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select via the fd
    # a Ctrl-C at the daemon's terminal reaches its whole process group: the daemon
    # decides what stops; the conversions themselves still see it, as fresh workers did
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(wake[1])
    threads = len(os.listdir("/proc/self/task"))
    _send(
        sock,
        {
            "ready": os.getpid(),
            "import_s": time.monotonic() - t0,
            "missing": missing,
            "threads": threads,
        },
    )
    try:
        while True:
            ready, _, _ = select.select([sock, wake[0]], [], [], 5.0)
            if wake[0] in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake[0], 4096)
            if sock in ready:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 3)
                if not data:
                    return 0  # the daemon closed the executor
                _fork(sock, json.loads(data), fds, wake)
            _reap(sock)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the daemon is gone; PDEATHSIG takes the children


if __name__ == "__main__":
    raise SystemExit(serve(int(sys.argv[1]), sys.argv[2]))
