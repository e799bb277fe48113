"""Conversions as tasks on a Dask cluster (``[convert] executor = "dask"``).

One conversion is one task. On the worker the task starts the same child process the
local executor starts (``python -m dsa110_ingest.convert.worker``), so a crash or OOM of
pyuvdata/casacore kills that child, never the Dask worker. While the child runs, the task
watches its own state on the worker: once the daemon cancels the future (timeout,
shutdown) or disappears (the scheduler then releases its tasks), the task kills the child.

Each task asks for one unit of ``[convert] dask_resource`` (default ``conversion``), so a
worker started with ``--resources conversion=1`` runs one conversion at a time whatever
its thread count. The queue stays in the index DB; the cluster only runs what the
dispatcher submits, never more than the slots the workers offer.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import structlog

from dsa110_ingest.config import ConvertConfig
from dsa110_ingest.convert.backoff import Backoff
from dsa110_ingest.convert.executor import LocalProcess
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConfigError, ConversionError

try:
    import distributed
    from distributed.comm.core import CommClosedError
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ConfigError(
        '[convert] executor = "dask" needs the extra `dask`: pip install "dsa110-ingest[dask]" '
        "(on the daemon's host and on every worker)"
    ) from e

log = structlog.get_logger("dsa110_ingest.convert")

KEY_PREFIX = "dsa110-convert"
# what the client, the scheduler and the comms raise when the cluster is out of reach
UNREACHABLE = (OSError, TimeoutError, CommClosedError, CancelledError)
INFO_EVERY_S = 2.0
CONNECT_TIMEOUT_S = 5.0
# between attempts to reach a scheduler that did not answer: 1 s, doubling, at most 60 s
RECONNECT_BACKOFF = Backoff(1.0, 60.0)
# a running task is still wanted while its worker holds it in one of these states; a
# cancelled future (or a client gone) turns it "cancelled" while the thread runs on
_WANTED = ("executing", "long-running", "resumed")


# -- on the worker ------------------------------------------------------------------
def run_on_worker(request: dict[str, Any]) -> dict[str, Any]:
    """The task: one conversion in a child process of this worker; plain JSON out."""
    worker = distributed.get_worker()
    key = worker.get_current_task()
    req = ConversionRequest.from_json(request)
    proc = LocalProcess(req)
    where = {"worker": worker.address, "host": socket.gethostname(), "pid": os.getpid()}
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.proc.wait(timeout=0.5)
        if proc.poll():
            break
        ts = worker.state.tasks.get(key)
        if ts is None or ts.state not in _WANTED:
            # cancelled by the daemon, or its client is gone: the attempt is given up
            proc.kill()
            return {"token": req.token, "cancelled": True, **where}
    result, error = proc.result()
    # plain JSON over the wire: a classified error travels as {"error", "kind"}
    err = error.to_json() if isinstance(error, ConversionError) else error
    return {"token": req.token, "result": result, "error": err, **where}


def probe_on_worker(path: str) -> dict[str, Any]:
    """``doctor``'s probe: read the file the daemon wrote, write a reply beside it."""
    p = Path(path)
    host = socket.gethostname()
    try:
        text = p.read_text()
        p.with_name(p.name + ".reply").write_text(f"{text}\n{host}")
    except OSError as e:
        return {"host": host, "error": f"{e.strerror or e} ({path})"}
    return {"host": host, "error": None}


# -- in the daemon --------------------------------------------------------------------
def where(cfg: ConvertConfig) -> str:
    return cfg.dask_scheduler or f"scheduler file {cfg.dask_scheduler_file}"


def connect(cfg: ConvertConfig, timeout: float = CONNECT_TIMEOUT_S) -> distributed.Client:
    """A synchronous client; raises one of UNREACHABLE or ValueError when it cannot."""
    address = cfg.dask_scheduler
    if cfg.dask_scheduler_file:
        # read it ourselves, each time: distributed would wait for a missing file forever,
        # and a restarted scheduler writes a new address into it
        try:
            address = json.loads(Path(cfg.dask_scheduler_file).read_text())["address"]
        except FileNotFoundError:
            raise FileNotFoundError(
                f"scheduler file {cfg.dask_scheduler_file} does not exist (yet)"
            ) from None
        except (KeyError, TypeError) as e:
            raise ValueError(f"{cfg.dask_scheduler_file} has no scheduler address") from e
    return distributed.Client(address, timeout=timeout, set_as_default=False)


def slots(info: dict[str, Any], resource: str) -> int:
    """Conversions the cluster's workers can run at once."""
    workers = info.get("workers", {}).values()
    if not resource:
        return sum(int(w.get("nthreads", 1)) for w in workers)
    return sum(int(w.get("resources", {}).get(resource, 0)) for w in workers)


class DaskHandle:
    def __init__(self, future: distributed.Future, req: ConversionRequest) -> None:
        self.future = future
        self.group_id = req.group_id
        self.token = req.token
        self.started = time.monotonic()
        self.transient = False
        self.worker: str | None = None
        self._killed = False

    def poll(self) -> bool:
        return bool(self.future.done())

    def result(self) -> tuple[dict[str, Any] | None, str | ConversionError | None]:
        if self._killed:
            return None, "conversion task cancelled by the dispatcher"
        status = self.future.status
        if status == "finished":
            try:
                out = self.future.result(timeout=60)
            except UNREACHABLE as e:
                self.transient = True
                return None, f"lost the scheduler while fetching the result: {e!r}; retried"
            self.worker = out.get("worker")
            if out.get("token") != self.token:
                # cannot happen with unique task keys; never register it if it does
                self.transient = True
                return None, "result belongs to another attempt; ignored and retried"
            if out.get("cancelled"):
                self.transient = True
                return None, f"task cancelled on worker {self.worker}; retried"
            err = out.get("error")
            return out.get("result"), (
                ConversionError.from_json(err) if isinstance(err, dict) else err
            )
        if status == "error":
            exc = self.future.exception(timeout=60)
            if isinstance(exc, distributed.KilledWorker):
                last = getattr(exc.last_worker, "address", exc.last_worker)
                return None, (
                    f"the conversion task's worker died {exc.allowed_failures + 1} times "
                    f"(last {last}); out of memory? size the workers by memory "
                    "(docs/scale-out.md)"
                )
            return None, (
                f"the conversion task failed on the cluster: {type(exc).__name__}: {exc}; "
                "is the same dsa110-ingest installed on every worker?"
            )
        # cancelled by the client itself: the scheduler went away or was restarted
        self.transient = True
        return None, f"conversion task {status} (scheduler lost or restarted); retried"

    def kill(self) -> None:
        self._killed = True
        # the running task sees the cancellation on its worker and kills its child process
        with contextlib.suppress(*UNREACHABLE):
            self.future.cancel()


class DaskExecutor:
    name = "dask"
    remote = True

    def __init__(self, cfg: ConvertConfig) -> None:
        self.cfg = cfg
        self.client: distributed.Client | None = None
        self._reason: str | None = None
        self._next_connect = 0.0
        self._failed_connects = 0  # in a row
        self._info: dict[str, Any] = {}
        self._info_at = 0.0
        self._processing: dict[str, list[str]] = {}
        self._gids: dict[str, str] = {}  # task key -> group id

    # the dispatcher thread is the only caller: no locking needed
    def _connected(self) -> distributed.Client | None:
        c = self.client
        if c is not None and c.status == "running":
            return c
        if c is not None and c.status in ("connecting", "newly-created"):
            self._reason = f"lost the scheduler at {where(self.cfg)}; reconnecting"
            return None
        if c is not None:
            with contextlib.suppress(*UNREACHABLE):
                c.close(timeout=2)
            self.client = None
        now = time.monotonic()
        if now < self._next_connect:
            return None
        try:
            self.client = connect(self.cfg)
        except (*UNREACHABLE, ValueError) as e:
            self._failed_connects += 1
            delay = RECONNECT_BACKOFF.delay(self._failed_connects)
            self._reason = (
                f"scheduler {where(self.cfg)} unreachable ({type(e).__name__}: {e}); "
                f"next try in {delay:.0f} s"
            )
            self._next_connect = now + delay
            return None
        self._failed_connects = 0
        self._info_at = 0.0
        log.info("convert.dask_connected", scheduler=self.client.scheduler.address)
        return self.client

    def _refresh(self) -> dict[str, Any]:
        c = self._connected()
        if c is None:
            self._info = {}
            return {}
        if time.monotonic() - self._info_at >= INFO_EVERY_S:
            try:
                self._info = dict(c.scheduler_info(n_workers=-1))
                self._processing = {w: list(k) for w, k in c.processing().items()}
            except UNREACHABLE as e:
                self._reason = f"scheduler {where(self.cfg)} not answering: {e!r}"
                self._info = {}
                return {}
            self._info_at = time.monotonic()
        return self._info

    def capacity(self) -> int | None:
        return slots(self._refresh(), self.cfg.dask_resource)

    def unavailable(self) -> str | None:
        info = self._refresh()
        if not info:
            return self._reason or f"not connected to {where(self.cfg)}"
        n = len(info.get("workers", {}))
        if n == 0:
            return f"the cluster at {where(self.cfg)} has no workers"
        if slots(info, self.cfg.dask_resource) == 0:
            r = self.cfg.dask_resource
            return (
                f"none of the cluster's {n} worker(s) offers the resource {r!r}; start them "
                f'with `dask worker ... --resources "{r}=1"` or set [convert] dask_resource = ""'
            )
        return None

    def submit(self, req: ConversionRequest) -> DaskHandle:
        c = self._connected()
        if c is None:
            raise OSError(self._reason or f"not connected to {where(self.cfg)}")
        key = f"{KEY_PREFIX}-{req.group_id}-{req.token or uuid.uuid4().hex}"
        res = {self.cfg.dask_resource: 1} if self.cfg.dask_resource else None
        try:
            fut = c.submit(run_on_worker, req.to_json(), key=key, pure=False, resources=res)
        except (*UNREACHABLE, RuntimeError) as e:  # RuntimeError: the client is closing
            raise OSError(f"submitting to {where(self.cfg)} failed: {e!r}") from e
        self._gids[key] = req.group_id
        return DaskHandle(fut, req)

    def forget(self, handle: DaskHandle) -> None:
        self._gids.pop(str(handle.future.key), None)

    def describe(self) -> dict[str, Any]:
        info = self._info
        workers = info.get("workers", {})
        running = {
            self._gids[k]: w
            for w, keys in self._processing.items()
            for k in keys
            if k in self._gids
        }
        return {
            "executor": self.name,
            "scheduler": where(self.cfg),
            "connected": bool(info),
            "workers": len(workers),
            "slots": slots(info, self.cfg.dask_resource) if info else 0,
            "resource": self.cfg.dask_resource,
            "running_on": running,
        }

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(*UNREACHABLE):
                self.client.close(timeout=5)
            self.client = None


def probe(
    cfg: ConvertConfig, timeout: float = 60.0
) -> tuple[int, list[tuple[str, str, str | None]]]:
    """The cluster's conversion slots, and (worker, host, error or None) for each worker:
    can it read a file the daemon wrote in ``output_dir``, and the daemon its reply?"""
    out_dir = cfg.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    client = connect(cfg)
    try:
        info = dict(client.scheduler_info(n_workers=-1))
        workers = list(info["workers"])
        rows: list[tuple[str, str, str | None]] = []
        for addr in workers:
            nonce = uuid.uuid4().hex
            path = out_dir / f".dsa110-probe-{nonce}"
            reply = path.with_name(path.name + ".reply")
            path.write_text(nonce)
            try:
                fut = client.submit(
                    probe_on_worker,
                    str(path),
                    workers=[addr],
                    allow_other_workers=False,
                    pure=False,
                )
                got = fut.result(timeout=timeout)
                err = got["error"]
                if err is None:
                    text = reply.read_text() if reply.exists() else ""
                    if not text.startswith(nonce):
                        err = f"its reply {reply} is not visible from this host"
                rows.append((addr, got["host"], err))
            except UNREACHABLE as e:
                rows.append((addr, "?", f"probe did not finish: {e!r}"))
            finally:
                path.unlink(missing_ok=True)
                reply.unlink(missing_ok=True)
        return slots(info, cfg.dask_resource), rows
    finally:
        client.close(timeout=5)
