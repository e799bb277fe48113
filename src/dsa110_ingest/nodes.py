"""Several ingest nodes on one index: whose storage locations are whose, one daemon per
node name, and which nodes' daemons run.

Each daemon has a node name (``node`` in the config, default the host name). The rows of
``storage_locations`` carry the node that watches them; a daemon watches only its own.
A file path is the key of the index, so a folder (or one inside it) configured on two
nodes would be indexed twice over: that is refused at start, naming both nodes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dsa110_ingest.config import Config
from dsa110_ingest.db import IndexStore, backend_of
from dsa110_ingest.db.records import Heartbeat
from dsa110_ingest.errors import IngestError

# a heartbeat older than this (6 missed beats) makes a daemon that holds its lock "stale"
STALE_AFTER_S = 30.0


class NodeConflictError(IngestError):
    """Another node's daemon, or another node's storage location, is in the way."""


def _nested(a: str, b: str) -> bool:
    """The same folder, or one inside the other."""
    a, b = a.rstrip(os.sep) + os.sep, b.rstrip(os.sep) + os.sep
    return a.startswith(b) or b.startswith(a)


def under(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` lies inside one of the folders ``roots``."""
    return any(path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def this_nodes_paths(store: IndexStore, cfg: Config) -> Callable[[str], bool]:
    """Which indexed paths this node can judge from its own disks: on a SQLite index
    (one node) every path, on a shared one those inside this node's locations."""
    if backend_of(cfg.hdf5_db) == "sqlite":
        return lambda p: True
    roots = [loc.path for loc in store.locations(cfg.node)]
    return lambda p: under(p, roots)


def check_locations(store: IndexStore, cfg: Config) -> None:
    """Refuse to start when a configured location (by path, or a folder inside or around
    it) belongs to another node in the index: the error names both nodes and the fix."""
    theirs = [loc for loc in store.locations() if loc.node and loc.node != cfg.node]
    if not theirs:
        return
    for mine in cfg.storage_locations:
        real = os.path.realpath(mine.path)
        for other in theirs:
            if _nested(real, other.path):
                raise NodeConflictError(
                    f"storage location {mine.name!r} ({real}) of node {cfg.node!r} is "
                    f"{'the' if real == other.path else 'nested with the'} location "
                    f"{other.name!r} ({other.path}) of node {other.node!r} in the index "
                    f"{store.name}; a folder is watched by one node. Remove it from one of "
                    f"the two configs, or, if this host replaces node {other.node!r}, set "
                    f'`node = "{other.node}"` here'
                )


def acquire_node(store: IndexStore, cfg: Config) -> None:
    """One daemon per node name across every host of a shared index."""
    if store.try_lock_node(cfg.node):
        return
    hb = store.heartbeat(cfg.node)
    seen = (
        f" (its last heartbeat: pid {hb.pid} on {hb.hostname}, "
        f"{max(0.0, time.time() - (hb.updated_at or 0)):.0f} s ago)"
        if hb is not None
        else ""
    )
    raise NodeConflictError(
        f"another daemon runs as node {cfg.node!r} on the index {store.name}{seen}; one "
        "daemon per node name: stop that one, or give this host its own `node` in the config"
    )


def state_path(cfg: Config) -> Path:
    """Where the daemon's state-dir files (lock, event-id floor) are named after: the
    SQLite file itself, or for a server database a name in ``state_dir``."""
    if backend_of(cfg.hdf5_db) == "sqlite":
        return Path(cfg.hdf5_db)
    return cfg.state_dir / "index"


def _holds_lock(store: IndexStore, node: str) -> bool:
    """Whether a live daemon holds ``node``'s lock (probing takes it for an instant)."""
    if store.try_lock_node(node):
        store.unlock_node(node)
        return False
    return True


def _alive_here(hb: Heartbeat) -> bool:
    """Whether the heartbeat's pid is a live process of this host's boot and pid namespace
    (``process`` in its status, procs.py); a heartbeat of an older release without it is
    judged by the host name and pid, as that release did."""
    from dsa110_ingest.procs import Proc, pid_alive, same_namespace

    if not hb.pid or hb.hostname != socket.gethostname():
        return False
    ident = hb.status.get("process")
    if isinstance(ident, dict):
        proc = Proc(hb.hostname, hb.pid, *(ident.get(k) for k in ("boot", "pidns", "machine")))
        # another container's (or boot's) pid of the same number is not this daemon
        return same_namespace(proc) and pid_alive(hb.pid)
    return pid_alive(hb.pid)


def _local_holder(cfg: Config, hb: Heartbeat | None) -> int | None:
    """This host's daemon of this state dir: the flock holder's pid (0: held, pid unknown),
    or the heartbeat's pid when that process is alive here; None: no daemon here."""
    from dsa110_ingest.statedir import StateLock

    try:
        holder = StateLock(state_path(cfg)).holder()
    except OSError:
        holder = None  # lock file unreadable to this user: fall back to the pid below
    if holder is None and hb is not None and _alive_here(hb):
        holder = hb.pid  # alive (maybe another user's), lock not visible to us
    return holder


def node_state(
    store: IndexStore | None, cfg: Config, node: str, hb: Heartbeat | None, now: float
) -> dict[str, Any]:
    """running / stale / stopped for one node. This node's daemon is seen through the
    state dir's lock file; any node's through its lock in the index (PostgreSQL); the
    heartbeat's age tells running from stale."""
    age = None if hb is None or hb.updated_at is None else max(0.0, now - hb.updated_at)
    holder: int | None = None
    if node == cfg.node:
        holder = _local_holder(cfg, hb)
    if holder is None and store is not None and _holds_lock(store, node):
        holder = hb.pid if hb is not None and hb.pid else 0
    if holder is None:
        state = "stopped"
    elif age is not None and age <= STALE_AFTER_S:
        state = "running"
    else:
        state = "stale"
    return {
        "node": node,
        "state": state,
        "pid": (holder or (hb.pid if hb else None)) if holder is not None else None,
        "hostname": hb.hostname if hb else None,
        "heartbeat_age_seconds": None if age is None else round(age, 1),
        "stale_after_seconds": STALE_AFTER_S,
        "this_node": node == cfg.node,
    }


def node_states(store: IndexStore | None, cfg: Config, now: float) -> list[dict[str, Any]]:
    """Every node that ever wrote a heartbeat into the index, and this node, by name."""
    beats = {hb.node: hb for hb in store.heartbeats()} if store is not None else {}
    names = sorted(set(beats) | {cfg.node})
    return [node_state(store, cfg, n, beats.get(n), now) for n in names]
