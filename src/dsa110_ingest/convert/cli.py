"""``dsa110-ingest convert GROUP_ID`` and ``retry GROUP_ID``."""

from __future__ import annotations

import sys
import time

from dsa110_ingest.config import Config
from dsa110_ingest.convert import worker
from dsa110_ingest.convert.queue import Recorder, build_request
from dsa110_ingest.db.hdf5 import Hdf5DB
from dsa110_ingest.db.products import ProductsDB
from dsa110_ingest.errors import ConversionError


def convert_now(cfg: Config, group_id: str, force: bool) -> int:
    """Convert in this process, with the same request, writes and events as the daemon."""
    with Hdf5DB(cfg.hdf5_db) as hdf5, ProductsDB(cfg.products_db) as products:
        job = hdf5.job(group_id)
        if job is not None and job["state"] == "converted" and not force:
            print(
                f"convert: {group_id} is already converted to {job['ms_path']} "
                "(use --force to convert again)",
                file=sys.stderr,
            )
            return 0
        if (
            job is not None
            and job["state"] == "running"
            and (job["lease_expires_at"] or 0) > time.time()
            and not force
        ):
            print(
                f"convert: {group_id} is being converted by {job['lease_owner']} right now",
                file=sys.stderr,
            )
            return 1
        req = build_request(cfg, hdf5, group_id, force=force)
        g = hdf5.group(group_id)
        with hdf5.tx(f"queueing {group_id} for a foreground conversion"):
            hdf5.enqueue_job(group_id, g["start_mjd"] if g else None, time.time(), req.partial)
        rec = Recorder(cfg, hdf5, products)
        try:
            result = worker.run(req, force=force)
        except ConversionError as e:
            rec.failure(group_id, None, str(e))
            print(f"convert: {group_id} failed: {e}", file=sys.stderr)
            return 1
        rec.success(req, result, None)
        how = (
            "already present, registered"
            if result.get("skipped")
            else f"written in {result.get('seconds', 0):.1f} s"
        )
        print(f"convert: {group_id} -> {result['ms_path']} ({how})", file=sys.stderr)
        return 0


def retry(cfg: Config, group_id: str) -> int:
    with Hdf5DB(cfg.hdf5_db) as hdf5:
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
            print(
                f"retry: {group_id} is {job['state']}, not failed; nothing to do", file=sys.stderr
            )
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
