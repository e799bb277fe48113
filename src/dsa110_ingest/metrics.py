"""Prometheus metrics (``--metrics-listen HOST:PORT``), on a registry of our own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from dsa110_ingest.errors import ConfigError

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.files_indexed = Counter("dsa110_ingest_files_indexed", "Files indexed", registry=r)
        self.files_rejected = Counter("dsa110_ingest_files_rejected", "Files rejected", registry=r)
        self.events = Counter("dsa110_ingest_events", "Group events emitted", ["type"], registry=r)
        self.groups = Gauge("dsa110_ingest_groups", "Groups by state", ["state"], registry=r)
        self.conversions = Gauge(
            "dsa110_ingest_conversions", "Conversion jobs by state", ["state"], registry=r
        )
        self.event_latency = Histogram(
            "dsa110_ingest_event_latency_seconds",
            "File finished (close/rename/settle seen) to its group.complete event committed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.index_latency = Histogram(
            "dsa110_ingest_index_latency_seconds",
            "File finished to its row committed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_runs = Counter(
            "dsa110_ingest_reconcile_runs", "Reconcile passes", registry=r
        )
        self.reconcile_found = Counter(
            "dsa110_ingest_reconcile_found_files",
            "Files found by reconcile that no event reported (non-zero: inotify missed some)",
            registry=r,
        )
        self.conversion_seconds = Histogram(
            "dsa110_ingest_conversion_seconds",
            "Conversion wall time",
            buckets=(10, 30, 60, 120, 180, 270, 400, 600, 1200, 1800),
            registry=r,
        )
        self.watcher_alive = Gauge(
            "dsa110_ingest_watcher_alive", "1 while every observer thread runs", registry=r
        )

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"metrics_listen {listen!r} must be HOST:PORT, e.g. 127.0.0.1:9108")
        try:
            start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        except OSError as e:
            raise ConfigError(
                f"cannot serve metrics on {listen}: {e.strerror}; pick a free port"
            ) from None
