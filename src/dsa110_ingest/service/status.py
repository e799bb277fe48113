"""The daemon seen from outside (``status``, ``doctor``, scripts): running, stale or
stopped, from this node's state-dir lock and heartbeat (``nodes.node_state``)."""

from __future__ import annotations

import time
from typing import Any

from dsa110_ingest.config import Config
from dsa110_ingest.db import index_exists, open_index
from dsa110_ingest.metrics import package_version
from dsa110_ingest.nodes import STALE_AFTER_S, node_state

__all__ = ["STALE_AFTER_S", "daemon_status"]


def daemon_status(cfg: Config, now: float | None = None) -> dict[str, Any]:
    """running / stale / stopped of this node's daemon, for `status` and scripts: its
    lock says whether a daemon process is alive (the lock dies with the process, so no
    pid guessing), the heartbeat's age whether it still works (nodes.node_state)."""
    now = time.time() if now is None else now
    if not index_exists(cfg):
        st = node_state(None, cfg, cfg.node, None, now)
    else:
        with open_index(cfg, readonly=True) as db:
            st = node_state(db, cfg, cfg.node, db.heartbeat(cfg.node), now)
    return {
        "state": st["state"],
        "pid": st["pid"],
        "heartbeat_age_seconds": st["heartbeat_age_seconds"],
        "stale_after_seconds": STALE_AFTER_S,
        "version": package_version(),
    }
