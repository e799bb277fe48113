"""``dsa110-ingest convert GROUP_ID`` and ``retry GROUP_ID``."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from dsa110_ingest.config import Config
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.queue import Recorder, build_request
from dsa110_ingest.db import open_index, open_products
from dsa110_ingest.errors import ConversionError, DatabaseError


def convert_now(cfg: Config, group_id: str, force: bool) -> int:
    """Convert in this process, with the same request, lease, writes and events as the
    daemon: while anyone else holds the group's lease (the daemon's dispatcher, another
    ``convert``), this refuses, with or without ``--force``."""
    owner = f"convert:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    lease_s = cfg.convert.lease_seconds
    with open_index(cfg) as hdf5, open_products(cfg) as products:
        job = hdf5.job(group_id)
        if job is not None and job.state == "converted" and not force:
            print(
                f"convert: {group_id} is already converted to {job.ms_path} "
                "(use --force to convert again)",
                file=sys.stderr,
            )
            return 0
        try:
            req = build_request(cfg, hdf5, group_id, force=force)
        except ConversionError as e:
            print(f"convert: {e}", file=sys.stderr)
            return 1
        g = hdf5.group(group_id)
        with hdf5.transaction(f"queueing {group_id} for a foreground conversion"):
            hdf5.enqueue_job(group_id, g.start_mjd if g else None, time.time(), req.partial)
        if hdf5.lease_job(group_id, owner, time.time(), lease_s) is None:
            held = hdf5.job(group_id)
            print(
                f"convert: {group_id} is being converted by {held.lease_owner} right now "
                f"(lease for {max(0.0, (held.lease_expires_at or 0) - time.time()):.0f} s "
                "more); wait for it to finish, then `convert --force` if needed",
                file=sys.stderr,
            )
            return 1
        rec = Recorder(cfg, hdf5, products)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = worker.run(req, force=force)
            except ConversionError as e:
                outcome["error"] = e
            except Exception as e:  # noqa: BLE001 -- recorded like the worker process does
                outcome["error"] = ConversionError(f"{type(e).__name__}: {e}")

        t = threading.Thread(target=work, name=f"convert-{group_id}", daemon=True)
        t.start()
        while t.is_alive():
            t.join(lease_s / 3)
            # keep the lease as the dispatcher does: nobody else starts this group meanwhile
            try:
                if t.is_alive():
                    hdf5.renew_lease(group_id, owner, time.time() + lease_s)
            except DatabaseError as e:
                print(f"convert: renewing the lease failed ({e}); retrying", file=sys.stderr)
        if "error" in outcome:
            e = outcome["error"]
            state = rec.failure(group_id, owner, e)
            print(f"convert: {group_id} failed ({e.kind}, {state}): {e}", file=sys.stderr)
            return 1
        result = outcome["result"]
        if not rec.success(req, result, owner):
            print(
                f"convert: lost the lease of {group_id} to another converter; its result stands",
                file=sys.stderr,
            )
            return 1
        how = (
            "already present, registered"
            if result.get("skipped")
            else f"written in {result.get('seconds', 0):.1f} s"
        )
        print(f"convert: {group_id} -> {result['ms_path']} ({how})", file=sys.stderr)
        return 0


def retry(cfg: Config, group_id: str) -> int:
    with open_index(cfg) as hdf5:
        job = hdf5.job(group_id)
        if job is None:
            print(
                f"retry: {group_id} has no conversion job (is the group complete? see "
                "`dsa110-ingest groups`)",
                file=sys.stderr,
            )
            return 1
        if not hdf5.retry_failed_job(group_id, time.time()):
            # as `convert` of a converted group: nothing to do is not an error
            print(f"retry: {group_id} is {job.state}, not failed; nothing to do", file=sys.stderr)
            return 0
    from dsa110_ingest.service import daemon_status  # the service imports this module's peers

    daemon = daemon_status(cfg)
    who = (
        f"the running daemon (pid {daemon['pid']}) picks it up"
        if daemon["state"] == "running"
        else f"but no daemon is running to pick it up (it is {daemon['state']}); start it, "
        f"or convert it now with `dsa110-ingest convert {group_id}`"
    )
    print(f"retry: {group_id} is pending again; {who}", file=sys.stderr)
    return 0
