"""The daemon's side of the conversion template (convert/template.py): starts it, asks it
for one child per conversion, learns each child's exit status, restarts it when it died.

A child is a handle like a fresh worker process's (executor.LocalProcess): its stdio are
pipes the daemon made, its signals go through a pidfd (never to a recycled pid), its exit
status and resource use come from the template, which reaps it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import structlog

from dsa110_ingest.convert.executor import _Pumped, die_with_parent
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.convert.template_report import SILENT_REPORT_S, template_problem
from dsa110_ingest.errors import ConversionError

log = structlog.get_logger("dsa110_ingest.convert")

# how long a fork request may wait for the template's answer: the first one waits for its
# imports (~0.5 s quiet, much longer on a loaded 2-core machine). The dispatcher's leases
# are renewed meanwhile by their own thread (convert/lease_keeper.py)
REPLY_TIMEOUT_S = 120.0
# ... and once it has said it is ready: a fork takes milliseconds, so a template silent
# this long is hung (stopped, deadlocked, in D state) and is killed and replaced
ANSWER_TIMEOUT_S = 15.0


class TemplateChild(_Pumped):
    """One conversion: a child forked by the template."""

    def __init__(self, req: ConversionRequest, template: Template) -> None:
        super().__init__(req)
        self.template = template
        self.pid = 0
        self.pidfd = -1
        self.status: int | None = None
        self.cpu_s = 0.0
        self.maxrss_kib = 0
        self.refused = ""  # why the template did not fork it
        self.gen = 0
        self._done = threading.Event()
        self._ended_at: float | None = None  # its pidfd said it ended, its status not come
        self.lost = ""  # why it is given up without an exit status

    def finished(self, msg: dict[str, Any] | None) -> None:
        """The template reaped the child (``msg``), or died (None): it is gone either way."""
        if msg is not None:
            self.status = int(msg["status"])
            self.cpu_s = float(msg.get("cpu_s", 0.0))
            self.maxrss_kib = int(msg.get("maxrss_kib", 0))
        self._done.set()

    def poll(self) -> bool:
        if self._done.is_set():
            return True
        # ended (its pidfd is readable) with no exit status from the template for an
        # answer timeout: the template no longer reaps (stopped, D state) and no fork
        # request came to find it hung. Given up, uncounted; the template killed as hung
        fd = self.pidfd
        if fd < 0 or not select.select([fd], [], [], 0)[0]:
            return False
        now = time.monotonic()
        self._ended_at = self._ended_at or now
        if now - self._ended_at < self.template.answer_timeout:
            return False
        self.lost = (
            f"the conversion process ended but the template (pid {self.template.pid}) did "
            f"not report its exit status in {self.template.answer_timeout:g} s: hung; it "
            "is killed and replaced"
        )
        self.template._kill_hung(self.gen, self.template.answer_timeout)
        self.finished(None)
        return True

    def result(self) -> tuple[dict[str, Any] | None, str | ConversionError | None]:
        while not self.poll():
            self._done.wait(0.5)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.lost:
            self.transient = True  # whatever it wrote stands: the retry registers an MS
            return None, self.lost
        if self.status is None:
            # the template went (killed, OOM): the child died with it through no fault of
            # the group's; retried without using up an attempt
            self.transient = True
            return None, (
                f"the conversion template process died (pid {self.template.pid}) and took "
                "this conversion with it; the template is restarted"
            )
        return self._outcome(self.status)

    def signal(self, sig: signal.Signals) -> None:
        if self.pidfd >= 0 and not self._done.is_set():
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def kill(self) -> None:
        self.signal(signal.SIGTERM)
        if not self._done.wait(5):
            self.signal(signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not self.poll() and time.monotonic() < deadline:
                self._done.wait(0.5)


class Template:
    """The template process, started on first use and again whenever it has died."""

    def __init__(self, backend: str) -> None:
        self.backend = backend  # what it preloads (template.PRELOAD)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.sock: socket.socket | None = None
        self._lock = threading.Lock()  # one fork request at a time
        self._tokens = itertools.count(1)
        self._replies: dict[int, tuple[threading.Event, TemplateChild]] = {}
        self._children: dict[int, TemplateChild] = {}
        self._reader: threading.Thread | None = None
        self.restarts = 0
        self.gen = 0  # which start of the template a child or request belongs to
        self.ready: dict[str, Any] = {}
        self.reply_timeout = REPLY_TIMEOUT_S
        self.answer_timeout = ANSWER_TIMEOUT_S
        self.ready_gen = 0  # the start of the template that last said it was ready
        self.hung = 0  # templates killed for not answering
        self.silent_after = SILENT_REPORT_S
        self.started_at: float | None = None  # when the current template started (unix)
        self.asking_since: float | None = None  # a fork request waits since (unix)
        # the last template killed for not answering: pid, silent_since, killed_at
        self.last_hung: dict[str, Any] | None = None
        self.orphans_killed = 0  # children forked after their request had timed out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.sock is not None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dsa110_ingest.convert.template",
                    str(theirs.fileno()),
                    self.backend,
                ],
                stdin=subprocess.DEVNULL,
                # numpy's OpenBLAS would start a thread pool at import: a process that forks
                # must have no other threads (their locks would stay held in the children)
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
                pass_fds=(theirs.fileno(),),
                preexec_fn=die_with_parent,
            )
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.started_at = time.time()
        self.sock = ours
        self.gen += 1
        self._reader = threading.Thread(
            target=self._read,
            args=(ours, self.proc, self.gen),
            name="convert-template",
            daemon=True,
        )
        self._reader.start()

    def _read(self, sock: socket.socket, proc: subprocess.Popen[bytes], gen: int) -> None:
        """Replies and exit statuses, until the template's end of the socket closes."""
        try:
            while True:
                data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 1)
                if not data:
                    break
                msg = json.loads(data)
                if "ready" in msg:
                    self.ready, self.ready_gen = msg, gen
                    log.info(
                        "convert.template_ready",
                        pid=msg["ready"],
                        import_s=round(msg["import_s"], 3),
                        threads=msg["threads"],
                    )
                elif "token" in msg:
                    self._answer(msg, fds[0] if fds else -1)
                elif "status" in msg:
                    with self._lock:
                        child = self._children.pop(int(msg["pid"]), None)
                    if child is not None:
                        child.finished(msg)
        except OSError:
            pass
        finally:
            self._gone(sock, proc, gen)

    def _answer(self, msg: dict[str, Any], pidfd: int) -> None:
        """The template's answer to a fork request: the child is registered here, before
        its exit status (which follows on the same socket) can be read."""
        with self._lock:
            ev, child = self._replies.pop(msg["token"], (None, None))
            if child is not None and "pid" in msg:
                child.pid, child.pidfd = int(msg["pid"]), pidfd
                self._children[child.pid] = child
            elif pidfd >= 0:
                # forked after its request timed out: that group runs in a fresh process
                # now; this child (stdin at EOF, nobody reading its output) must not run on
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
                self.orphans_killed += 1
                log.warning("convert.template_late_child_killed", pid=msg.get("pid"))
            if child is not None and "pid" not in msg:
                child.refused = str(msg.get("error"))
        if ev is not None:
            ev.set()

    def _gone(self, sock: socket.socket, proc: subprocess.Popen[bytes], gen: int) -> None:
        with self._lock:
            if self.sock is sock:
                self.sock = None
            # this template's children and requests only: a restarted one has its own
            orphans = {p: c for p, c in self._children.items() if c.gen == gen}
            waiting = {t: r for t, r in self._replies.items() if r[1].gen == gen}
            for pid in orphans:
                del self._children[pid]
            for token in waiting:
                del self._replies[token]
        for ev, child in waiting.values():
            child.refused = "the template process exited"
            ev.set()
        sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if orphans or proc.returncode not in (0, None):
            log.warning(
                "convert.template_died",
                pid=proc.pid,
                status=proc.returncode,
                conversions_lost=len(orphans),
                hint="restarted at the next conversion; lost conversions are retried",
            )
        for child in orphans.values():
            child.finished(None)

    def submit(self, req: ConversionRequest) -> TemplateChild | None:
        """A child converting ``req``; None when the template cannot serve it (the caller
        then starts a fresh worker process)."""
        pipes: list[tuple[int, int]] = []
        try:
            for _ in range(3):
                pipes.append(os.pipe2(os.O_CLOEXEC))
        except OSError:  # EMFILE: the dispatcher retries; the pipes made so far must go
            for fd in (fd for pair in pipes for fd in pair):
                os.close(fd)
            raise
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        mine = [pipes[0][1], pipes[1][0], pipes[2][0]]
        try:
            with self._lock:
                if not self.alive():
                    if self.proc is not None:
                        self.restarts += 1
                        log.warning(
                            "convert.template_restart",
                            old_pid=self.pid,
                            status=self.proc.poll(),
                            restarts=self.restarts,
                        )
                    self._start()
                assert self.sock is not None
                token = next(self._tokens)
                ev, child = threading.Event(), TemplateChild(req, self)
                child.gen = self.gen
                self._replies[token] = (ev, child)
                socket.send_fds(self.sock, [json.dumps({"token": token}).encode()], theirs)
        except OSError as e:
            log.warning("convert.template_unusable", error=str(e), fallback="fresh process")
            for fd in mine:  # theirs are closed below, once: a second close could hit an
                os.close(fd)  # fd another thread was handed meanwhile
            return None
        finally:
            for fd in theirs:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return self._adopt(req, token, ev, child, mine)

    def _adopt(
        self,
        req: ConversionRequest,
        token: int,
        ev: threading.Event,
        child: TemplateChild,
        mine: list[int],
    ) -> TemplateChild | None:
        limit = self.answer_timeout if self.ready_gen == child.gen else self.reply_timeout
        self.asking_since = time.time()
        try:
            if not ev.wait(limit):
                with self._lock:
                    late = self._replies.pop(token, None) is None
                if not late:  # else the answer came just now: the child is ours after all
                    child.refused = f"no answer in {limit:g} s"
                    self._kill_hung(child.gen, limit)
        finally:
            self.asking_since = None
        if child.pid == 0:
            log.warning("convert.template_unusable", error=child.refused, fallback="fresh process")
            for fd in mine:
                os.close(fd)
            return None
        stdin, stdout, stderr = (
            os.fdopen(fd, m) for fd, m in zip(mine, ("wb", "rb", "rb"), strict=True)
        )
        child._pump(stdin, stdout, stderr, req)
        return child

    def _kill_hung(self, gen: int, waited: float) -> None:
        """The template did not answer: kill it, so its children die with it (their exit
        statuses would never come: their conversions are retried, uncounted) and the next
        conversion starts a new one, instead of every request waiting on it in turn."""
        with self._lock:
            proc = self.proc if self.gen == gen else None
        if proc is None or proc.poll() is not None:
            return
        self.hung += 1
        self.last_hung = {
            "pid": proc.pid,
            "silent_since": self.asking_since,
            "killed_at": time.time(),
        }
        log.warning(
            "convert.template_hung",
            pid=proc.pid,
            waited_s=waited,
            hint="killed; its conversions are retried and a new template starts",
        )
        with contextlib.suppress(OSError):
            proc.kill()
        with self._lock:
            # never asked again, dead or not (in D state SIGKILL waits for the I/O to
            # return): the next conversion starts a new template; this one's reader
            # thread reports its children when it does die
            if self.gen == gen:
                self.sock = None

    def describe(self) -> dict[str, Any]:
        """For `status --json` (``executor.template``) and :meth:`problem`."""
        alive = self.alive()  # a killed or dead template is named only in last_hung
        return {
            "pid": (self.pid or None) if alive else None,
            "started_at": self.started_at if alive else None,
            "restarts": self.restarts,
            "killed_hung": self.hung,
            "silent_since": self.asking_since,
            "silent_after_s": self.silent_after,  # reported as not answering after that
            "answer_timeout_s": self.answer_timeout
            if self.ready_gen == self.gen
            else self.reply_timeout,
            "last_hung": self.last_hung,
        }

    def problem(self, now: float | None = None) -> str | None:
        """The template not answering a fork request for ``silent_after`` s or more, for
        /healthz and the heartbeat (None: it answers)."""
        return template_problem(self.describe(), now)

    def close(self) -> None:
        """Stop the template; its running children die with it (PR_SET_PDEATHSIG)."""
        with self._lock:
            proc, sock = self.proc, self.sock
            self.sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if proc is not None and proc.poll() is None:
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
