"""Executors run a :class:`ConversionRequest` somewhere: a local child process
(``[convert] executor = "local"``) or a task on a Dask cluster (``"dask"``, in
:mod:`dsa110_ingest.convert.dask_executor`), which runs the same child process on a worker.

``submit`` returns a handle that can be polled, asked for its result, and killed. A
handle whose attempt failed for the executor's reasons (a lost scheduler, a cancelled
task) sets ``transient``: the group waits and is retried without counting the attempt.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

import structlog

from dsa110_ingest.config import ConvertConfig
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConfigError, ConversionError

log = structlog.get_logger("dsa110_ingest.convert")


class Handle(Protocol):
    group_id: str
    started: float
    transient: bool  # meaningful after result(): the error was the executor's, not the group's

    def poll(self) -> bool: ...  # True when finished
    # (result, error); a ConversionError keeps its class (permanent, node...), a str is
    # an unclassified failure, retried and counted
    def result(self) -> tuple[dict[str, Any] | None, str | ConversionError | None]: ...
    def kill(self) -> None: ...


class Executor(Protocol):
    name: str
    remote: bool  # outputs are written on another machine: check them from the daemon's side

    def submit(self, req: ConversionRequest) -> Handle: ...
    def capacity(self) -> int | None: ...  # conversions it can run now; None: no own limit
    def unavailable(self) -> str | None: ...  # why nothing can be submitted now, or None
    def describe(self) -> dict[str, Any]: ...  # for `status` and metrics
    def forget(self, handle: Handle) -> None: ...  # the dispatcher is done with the handle
    def close(self) -> None: ...


def die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a converter outliving a SIGKILLed daemon would race the retry
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class _Pumped:
    """A conversion process's pipes, drained by two threads: stderr to the log (and the
    last lines kept for the error), stdout (the result line) kept whole."""

    transient = False

    def __init__(self, req: ConversionRequest) -> None:
        self.group_id = req.group_id
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._out: list[bytes] = []
        self._threads: list[threading.Thread] = []

    def _pump(
        self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes], req: ConversionRequest
    ) -> None:
        self._threads = [
            threading.Thread(target=self._pump_err, args=(stderr,), daemon=True),
            threading.Thread(target=self._pump_out, args=(stdout,), daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            stdin.write(json.dumps(req.to_json()).encode())
            stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; poll() reports it

    def _pump_err(self, stderr: IO[bytes]) -> None:
        with stderr:
            for raw in stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self.tail.append(line)
                    log.info("convert.output", group_id=self.group_id, line=line)

    def _pump_out(self, stdout: IO[bytes]) -> None:
        with stdout:
            self._out.append(stdout.read())

    def _outcome(self, rc: int) -> tuple[dict[str, Any] | None, str | ConversionError | None]:
        for t in self._threads:
            t.join(timeout=5)
        lines = b"".join(self._out).decode("utf-8", "replace").strip().splitlines()
        data: dict[str, Any] = {}
        if lines:
            with contextlib.suppress(ValueError):
                data = json.loads(lines[-1])
        if rc == 0 and "ms_path" in data:
            return data, None
        if "error" in data:  # the worker's classified error (errors.ConversionError.to_json)
            return None, ConversionError.from_json(data)
        if rc < 0:
            sig = signal.Signals(-rc).name
            return None, f"conversion process killed by {sig}" + (
                " (out of memory?)" if sig == "SIGKILL" else ""
            )
        last = self.tail[-1] if self.tail else "no output"
        return None, f"conversion process exited with status {rc}: {last}"


class LocalProcess(_Pumped):
    """A fresh ``python -m dsa110_ingest.convert.worker`` (the Dask executor's task runs
    one on its worker; the local executor when its template cannot run)."""

    def __init__(self, req: ConversionRequest) -> None:
        super().__init__(req)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dsa110_ingest.convert.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            close_fds=True,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.pid = self.proc.pid
        self._pump(self.proc.stdin, self.proc.stdout, self.proc.stderr, req)

    def poll(self) -> bool:
        return self.proc.poll() is not None

    def result(self) -> tuple[dict[str, Any] | None, str | ConversionError | None]:
        return self._outcome(self.proc.wait())

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalProcessExecutor:
    """Each conversion in its own process, forked from a warm template
    (convert/template.py); a fresh worker process when the template cannot start."""

    name = "local"
    remote = False

    def __init__(self, backend: str = "native", use_template: bool = True) -> None:
        from dsa110_ingest.convert.template_client import Template

        # ``backend``: the configured one, whose modules the template preloads; a request
        # for another backend still runs (its child imports what it needs)
        self.template: Template | None = Template(backend) if use_template else None

    def submit(self, req: ConversionRequest) -> Handle:
        if self.template is not None:
            h = self.template.submit(req)
            if h is not None:
                return h
        return LocalProcess(req)

    def capacity(self) -> int | None:
        return None

    def unavailable(self) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        t = self.template
        if t is None:
            return {"executor": self.name}
        # restarts and hung kills: a template that keeps dying or stops answering shows
        return {"executor": self.name, "template": t.describe()}

    def forget(self, handle: Handle) -> None:
        pass  # a finished child keeps nothing here

    def close(self) -> None:
        if self.template is not None:
            self.template.close()


def _dask(cfg: ConvertConfig) -> Executor:
    # imported only when chosen: it needs the extra `dask`, and raises a ConfigError
    # naming it when that is missing
    from dsa110_ingest.convert.dask_executor import DaskExecutor

    return DaskExecutor(cfg)


# ``[convert] executor`` -> how to build it; a new executor is one entry here (and its
# name in config.EXECUTORS)
EXECUTORS: dict[str, Callable[[ConvertConfig], Executor]] = {
    LocalProcessExecutor.name: lambda cfg: LocalProcessExecutor(cfg.backend),
    "dask": _dask,
}


def make_executor(cfg: ConvertConfig) -> Executor:
    """The executor ``[convert] executor`` names; the Dask one connects lazily."""
    build = EXECUTORS.get(cfg.executor)
    if build is None:
        raise ConfigError(
            f"[convert] executor {cfg.executor!r} is unknown; use one of {sorted(EXECUTORS)}"
        )
    return build(cfg)
