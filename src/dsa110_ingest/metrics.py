"""Prometheus metrics and the health check (``metrics_listen = "HOST:PORT"``).

One small HTTP server of our own serves ``/metrics`` (the registry) and ``/healthz``;
every other path is 404. It bounds its connections and drops idle ones, because every
connection costs a file descriptor, and a pile of idle ones once made the daemon's
reconcile fail with EMFILE.
"""

from __future__ import annotations

import errno
import http.server
import math
import platform
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import metadata
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dsa110_ingest.errors import ConfigError

log = structlog.get_logger("dsa110_ingest.metrics")

PREFIX = "dsa110_ingest_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Every state a group or a conversion job can be in: each is set on every refresh, so a
# state that empties drops to 0 instead of keeping its last value.
GROUP_STATES = ("collecting", "complete", "incomplete")
JOB_STATES = ("pending", "running", "converted", "failed")

MAX_CONNECTIONS = 16
IDLE_TIMEOUT_S = 10.0

# (ok, one-line reason) for /healthz
HealthCheck = Callable[[], tuple[bool, str]]


@cache
def package_version() -> str:
    """The installed version, from the package metadata (defined once, in pyproject.toml)."""
    try:
        return metadata.version("dsa110-ingest")
    except metadata.PackageNotFoundError:
        return "0+unknown"  # run from a source tree that was never installed


class Metrics:
    def __init__(self) -> None:
        # `_created` series double the series count and no dashboard of ours reads them
        disable_created_metrics()
        self.registry = CollectorRegistry()
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.files_indexed = counter("files_indexed", "Files indexed")
        self.files_rejected = counter("files_rejected", "Files rejected")
        self.events = counter("events", "Group events emitted", ["type"])
        self.groups = gauge("groups", "Groups by state", ["state"])
        self.conversions = gauge("conversions", "Conversion jobs by state", ["state"])
        self.event_latency = histogram(
            "event_latency_seconds",
            "File finished (close/rename/settle seen) to its group.complete event committed",
            LATENCY_BUCKETS,
        )
        self.index_latency = histogram(
            "index_latency_seconds", "File finished to its row committed", LATENCY_BUCKETS
        )
        self.reconcile_runs = counter("reconcile_runs", "Reconcile passes")
        self.reconcile_found = counter(
            "reconcile_found_files",
            "Files found by reconcile that no event reported (non-zero: inotify missed some)",
        )
        self.conversion_seconds = histogram(
            "conversion_seconds",
            "Conversion wall time",
            (10, 30, 60, 120, 180, 270, 400, 600, 1200, 1800),
        )
        self.watcher_alive = gauge("watcher_alive", "1 while every observer thread runs")
        self.build_info = gauge(
            "build_info", "Always 1; the labels say which version runs", ["version", "python"]
        )
        self.build_info.labels(package_version(), platform.python_version()).set(1)
        self.last_file_indexed = gauge(
            "last_file_indexed_timestamp_seconds",
            "Unix time the last file row was committed (0: none yet)",
        )
        self.last_event = gauge(
            "last_event_timestamp_seconds", "Unix time of the last group event (0: none yet)"
        )
        self.heartbeat = gauge(
            "heartbeat_timestamp_seconds", "Unix time of the last heartbeat the daemon wrote"
        )
        self.fd_exhausted = counter(
            "fd_exhausted",
            "Times an operation met EMFILE/ENFILE (too many open files) and was retried later",
        )
        self.metrics_connections_refused = counter(
            "metrics_connections_refused",
            f"Connections to this endpoint closed at once: more than {MAX_CONNECTIONS} open",
        )
        self.executor_workers = gauge(
            "executor_workers",
            "Workers of the conversion executor ([convert] executor), by executor",
            ["executor"],
        )
        self.conversions_running = gauge("conversions_running", "Conversions running now")
        self.conversions_waiting = gauge(
            "conversions_waiting",
            "1 while conversions cannot start (scheduler unreachable, no workers)",
        )
        self.conversion_transient_failures = counter(
            "conversion_transient_failures",
            "Attempts lost by the executor (not the group's fault), retried without counting",
        )
        self._known: dict[str, set[str]] = {"groups": set(GROUP_STATES), "jobs": set(JOB_STATES)}
        self.server: MetricsServer | None = None

    # every family is named dsa110_ingest_<name> and registered in this registry only
    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(PREFIX + name, doc, buckets=buckets, registry=self.registry)

    def set_states(self, groups: dict[str, int], jobs: dict[str, int]) -> None:
        """Set every known state, 0 when the DB has none in it."""
        for kind, gauge, counts in (
            ("groups", self.groups, groups),
            ("jobs", self.conversions, jobs),
        ):
            self._known[kind] |= set(counts)
            for state in self._known[kind]:
                gauge.labels(state).set(counts.get(state, 0))

    def names(self) -> set[str]:
        """Every metric family name as exposed (counters with their `_total`)."""
        return {
            f.name + "_total" if f.type == "counter" else f.name for f in self.registry.collect()
        }

    def serve(self, listen: str, health: HealthCheck | None = None) -> MetricsServer:
        host, _, port = listen.rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"metrics_listen {listen!r} must be HOST:PORT, e.g. 127.0.0.1:11010")
        try:
            self.server = MetricsServer(
                host.strip("[]"), int(port), self, health or (lambda: (True, "ok"))
            )
        except OSError as e:
            raise ConfigError(
                f"cannot serve metrics on {listen} (`metrics_listen`): {e.strerror}; "
                "pick a free port"
            ) from None
        self.server.start()
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class FdAlarm:
    """EMFILE/ENFILE (too many open files) met somewhere: counted every time, logged at
    most once every ``every_s`` (a node out of descriptors would flood the log)."""

    def __init__(
        self,
        metrics: Metrics,
        event: str,
        hint: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.event = event
        self.hint = hint
        self.every_s = every_s
        self.clock = clock
        self._last = -math.inf

    def report(self, e: OSError, **where: str) -> None:
        self.metrics.fd_exhausted.inc()
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            log.error(self.event, **where, error=e.strerror, hint=self.hint)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MetricsServer
    # idle clients (connected, sending nothing) are dropped after this long
    timeout = IDLE_TIMEOUT_S
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            try:
                ok, why = self.server.health()
            except Exception as e:  # noqa: BLE001 (a failing check means unhealthy)
                ok, why = False, f"health check failed: {e}"
            self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the daemon's log


class MetricsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, host: str, port: int, metrics: Metrics, health: HealthCheck) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.metrics = metrics
        self.health = health
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.fd_alarm = FdAlarm(
            metrics,
            "metrics.too_many_open_files",
            "connections are refused until descriptors free up; raise LimitNOFILE= in the "
            "unit if this recurs",
            every_s=60.0,
        )
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self.fd_alarm.report(e)
                # the listening socket stays readable: without a pause this loop would spin
                time.sleep(0.1)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            # over the bound: close now rather than hold a descriptor and a thread
            self.metrics.metrics_connections_refused.inc()
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
