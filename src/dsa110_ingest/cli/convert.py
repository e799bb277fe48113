"""``dsa110-ingest convert GROUP_ID``: convert one group now, in the foreground."""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from dsa110_ingest.cli._common import PROG, iso_time, say
from dsa110_ingest.config import Config
from dsa110_ingest.errors import ConversionError, DatabaseError, OutputClaimError

if TYPE_CHECKING:
    from dsa110_ingest.convert.recorder import Recorder
    from dsa110_ingest.convert.request import ConversionRequest
    from dsa110_ingest.db import IndexStore

NAME = "convert"
HELP = "convert one group now, in the foreground"
DESCRIPTION = (
    "Same request, writes and events as the daemon's conversion; useful "
    "after fixing what made a group fail."
)
EXIT_CODES = {
    0: "converted, or nothing to do (already converted; --force converts again)",
    1: "the conversion failed, the group is unknown or incomplete, the backend is not "
    "installed, another worker is converting it right now, or its recorded Measurement "
    "Set is missing on disk (--force writes it again), or [convert] output_dir is claimed "
    "by another index (`claim-output`)",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("group_id", type=iso_time, metavar="GROUP_ID", help="e.g. 2025-10-02T00:12:00")
    s.add_argument(
        "--force",
        action="store_true",
        help="convert even if already converted (or incomplete), replacing the MS",
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    from dsa110_ingest.convert.backends import require_available

    require_available(cfg)
    return convert_now(cfg, args.group_id, args.force)


def convert_now(cfg: Config, group_id: str, force: bool) -> int:
    """Convert in this process, with the same request, lease, writes and events as the
    daemon: while anyone else holds the group's lease (the daemon's dispatcher, another
    ``convert``), this refuses, with or without ``--force``."""
    # here, not at the top: every command's module is imported for `--help`
    from dsa110_ingest.convert.recorder import Recorder
    from dsa110_ingest.convert.request import build_request
    from dsa110_ingest.db import open_index, open_products
    from dsa110_ingest.leases import owner_name

    owner = owner_name("convert")
    lease_s = cfg.convert.lease_seconds
    with open_index(cfg) as hdf5, open_products(cfg) as products:
        job = hdf5.job(group_id)
        if job is not None and job.state == "converted" and not force:
            if job.ms_path and not os.path.exists(job.ms_path):
                say(
                    f"convert: {group_id} is recorded as converted to {job.ms_path}, but that "
                    "Measurement Set is missing on disk; `dsa110-ingest convert --force "
                    f"{group_id}` writes it again",
                    "error",
                )
                return 1
            say(
                f"convert: {group_id} is already converted to {job.ms_path} "
                "(use --force to convert again)"
            )
            return 0
        if not _output_dir_ours(cfg, hdf5):
            return 1
        try:
            req = build_request(cfg, hdf5, group_id, force=force)
        except ConversionError as e:
            say(f"convert: {e}", "error")
            return 1
        g = hdf5.group(group_id)
        with hdf5.transaction(f"queueing {group_id} for a foreground conversion"):
            hdf5.enqueue_job(group_id, g.start_mjd if g else None, time.time(), req.partial)
        if not _lease(cfg, hdf5, group_id, owner):
            return 1
        outcome = _convert_keeping_lease(hdf5, req, owner, lease_s, force)
        return _record(Recorder(cfg, hdf5, products), req, owner, outcome)


def _lease(cfg: Config, hdf5: IndexStore, group_id: str, owner: str) -> bool:
    """Take the group's lease; a lease whose holder is provably gone (see leases.py) is
    taken over. The takeover is conditional on that holder still owning the lease, so
    the store's fence (owner + attempt token) keeps one conversion recorded."""
    from dsa110_ingest.leases import can_take_over, gone, holder_of

    lease_s = cfg.convert.lease_seconds
    if hdf5.lease_job(group_id, owner, time.time(), lease_s) is not None:
        return True
    held = hdf5.job(group_id)
    left = max(0.0, (held.lease_expires_at or 0) - time.time())
    holder = holder_of(held.lease_owner)
    if holder is not None and gone(holder, held.started_at):
        why = f"pid {holder.pid} on this host, which held the lease, is gone"
        if can_take_over(holder, cfg.convert.executor):
            with hdf5.transaction(f"taking over the lease of {group_id} from a gone process"):
                freed = hdf5.finish_job(
                    group_id,
                    held.lease_owner,
                    "pending",
                    time.time(),
                    error=f"interrupted: {why} (killed mid-conversion)",
                )
            if freed and hdf5.lease_job(group_id, owner, time.time(), lease_s) is not None:
                say(f"convert: {group_id}: {why}; took its lease over")
                return True
            held = hdf5.job(group_id)  # someone else claimed it meanwhile
        else:
            say(
                f"convert: {group_id}: {why}, but its Dask task may still be running on a "
                f"worker; the lease expires in {left:.0f} s: run `convert` again then",
                "error",
            )
            return False
    say(
        f"convert: {group_id} is being converted by {held.lease_owner} right now "
        f"(lease for {max(0.0, (held.lease_expires_at or 0) - time.time()):.0f} s "
        "more); wait for it to finish, then `convert --force` if needed",
        "error",
    )
    return False


def _output_dir_ours(cfg: Config, hdf5: IndexStore) -> bool:
    """The output_dir is claimed by this index (claimed now if nobody has): the daemon's
    rule (convert/ownership.py), so ``convert`` never writes into another index's."""
    from dsa110_ingest.convert.ownership import Identity, ensure_claim

    try:
        ensure_claim(
            cfg.convert.output_dir, Identity.of(cfg, hdf5.index_id() or ""), f"{PROG} convert"
        )
    except OutputClaimError as e:
        say(f"convert: {e}", "error")
        return False
    return True


def _convert_keeping_lease(
    hdf5: IndexStore, req: ConversionRequest, owner: str, lease_s: float, force: bool
) -> dict[str, Any]:
    """Run the worker in a thread of this process while this thread renews the lease, as
    the dispatcher does: nobody else starts the group meanwhile. ``{"result": ...}`` or
    ``{"error": ConversionError}``."""
    from dsa110_ingest.convert import worker

    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = worker.run(req, force=force)
        except ConversionError as e:
            outcome["error"] = e
        except Exception as e:  # noqa: BLE001 -- recorded like the worker process does
            outcome["error"] = ConversionError(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=work, name=f"convert-{req.group_id}", daemon=True)
    t.start()
    while t.is_alive():
        t.join(lease_s / 3)
        try:
            if t.is_alive():
                hdf5.renew_lease(req.group_id, owner, time.time() + lease_s)
        except DatabaseError as e:
            say(f"convert: renewing the lease failed ({e}); retrying", "warning")
    return outcome


def _record(rec: Recorder, req: ConversionRequest, owner: str, outcome: dict[str, Any]) -> int:
    """The same writes and events as the daemon's; the exit code."""
    group_id = req.group_id
    if "error" in outcome:
        e = outcome["error"]
        state = rec.failure(group_id, owner, e)
        say(f"convert: {group_id} failed ({e.kind}, {state}): {e}", "error")
        return 1
    result = outcome["result"]
    if not rec.success(req, result, owner):
        say(
            f"convert: lost the lease of {group_id} to another converter; its result stands",
            "error",
        )
        return 1
    how = (
        "already present, registered"
        if result.get("skipped")
        else f"written in {result.get('seconds', 0):.1f} s"
    )
    say(f"convert: {group_id} -> {result['ms_path']} ({how})")
    return 0
