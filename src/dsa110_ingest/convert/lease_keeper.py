"""The renewer of a dispatcher's conversion leases: its own thread, its own connection.

The dispatcher's thread blocks for its own reasons: a fork request waiting on the
template's answer (up to ``REPLY_TIMEOUT_S``, the template's imports on a loaded machine),
a fresh worker's start, a Dask submit, its connection's busy waits. Renewing from that
thread let every other running conversion's lease lapse meanwhile, and another node of a
shared index take the group over: the same group converted twice. Here nothing else runs
on the thread and nothing else uses the connection, so a renewal is late by at most one
store call.

A group is held from its claim (before its request is built and submitted) until the
dispatcher records its outcome, hands it back or gives it up. A renewal that finds the
lease gone (expired and re-claimed elsewhere) marks the group lost; the dispatcher stops
that attempt without recording it. The dispatcher's loop ticks the keeper on every round
(``take_lost``) and every claim of a round (``tick``); when it has not done either for
``timeout_seconds`` (at least 10 min; wedged: none of its waits is that long, and it is
what kills a conversion at its timeout) renewals stop, so a stuck daemon cannot keep its
groups from the other nodes for ever.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import structlog

from dsa110_ingest.config import Config
from dsa110_ingest.db import IndexStore, open_index
from dsa110_ingest.errors import DatabaseError

log = structlog.get_logger("dsa110_ingest.convert")


class LeaseKeeper:
    """Renews the leases of the groups it holds every ``lease_seconds / 3``."""

    # the dispatcher is wedged only after max(timeout_seconds, this): its longest waits
    # (a template's answer, 120 s; killing a conversion, 35 s) are far shorter
    wedged_after_min_s = 600.0

    def __init__(
        self,
        cfg: Config,
        owner: str,
        clock: Callable[[], float] = time.time,
        store: Callable[[], IndexStore] | None = None,
    ) -> None:
        self.cfg = cfg
        self.owner = owner
        self.clock = clock
        self._open = store or (lambda: open_index(cfg))
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}  # group -> monotonic time it was claimed
        self._lost: set[str] = set()
        self._tick = time.monotonic()  # the dispatcher's loop last came round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0  # leases renewed (for the tests and `status`)

    @property
    def period(self) -> float:
        return self.cfg.convert.lease_seconds / 3

    def hold(self, gid: str) -> None:
        """Renew ``gid``'s lease from now on (the dispatcher just claimed it)."""
        with self._lock:
            self._held[gid] = time.monotonic()
            self._lost.discard(gid)

    def drop(self, gid: str) -> None:
        """Stop renewing ``gid`` (its outcome is being recorded, or it was handed back)."""
        with self._lock:
            self._held.pop(gid, None)
            self._lost.discard(gid)

    def take_lost(self) -> set[str]:
        """The held groups whose lease was found taken since the last call; being asked
        is the dispatcher's loop coming round."""
        with self._lock:
            self._tick = time.monotonic()
            lost, self._lost = self._lost, set()
        return lost

    def tick(self) -> None:
        """The dispatcher made progress (a claim handed to the executor): a round that
        claims several conversions, each waiting on the executor, is not wedged."""
        with self._lock:
            self._tick = time.monotonic()

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="convert-leases", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        db: IndexStore | None = None
        try:
            while not self._stop.wait(self.period):
                try:
                    if db is None:
                        db = self._open()
                    self.renew(db)
                except Exception:  # never let renewals stop: logged, retried
                    log.exception("convert.lease_renewal_failed", retry_in_s=self.period)
                    if db is not None:
                        with contextlib.suppress(Exception):
                            db.close()
                    db = None  # a fresh connection next time (a server restart)
        finally:
            if db is not None:
                db.close()

    def renew(self, db: IndexStore) -> None:
        """One round: extend every held lease by ``lease_seconds`` from now."""
        lease = self.cfg.convert.lease_seconds
        with self._lock:
            idle = time.monotonic() - self._tick
            held = list(self._held.items())
        if held and idle > max(self.cfg.convert.timeout_seconds, self.wedged_after_min_s):
            log.error(
                "convert.dispatcher_wedged",
                seconds=round(idle),
                hint="leases no longer renewed: other nodes may take these groups; restart",
            )
            return
        for gid, since in held:
            try:
                ok = db.renew_lease(gid, self.owner, self.clock() + lease)
            except DatabaseError as e:
                log.warning("convert.lease_renewal_failed", group_id=gid, error=str(e))
                continue
            if ok:
                self.renewals += 1
                continue
            with self._lock:
                # the same claim still held: not dropped (its outcome recorded) meanwhile
                if self._held.get(gid) == since:
                    del self._held[gid]
                    self._lost.add(gid)
