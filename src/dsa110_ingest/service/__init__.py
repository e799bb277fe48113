"""The daemon (``run``) and its one-shot burst (``run --rescan``); see
docs/architecture.md, "The service", for which module holds what."""

from dsa110_ingest.service.daemon import Service
from dsa110_ingest.service.loop import EXIT_FATAL, EXIT_OK
from dsa110_ingest.service.runtime import ServiceHooks
from dsa110_ingest.service.status import STALE_AFTER_S, daemon_status

__all__ = ["EXIT_FATAL", "EXIT_OK", "STALE_AFTER_S", "Service", "ServiceHooks", "daemon_status"]
