"""``dsa110-ingest retry GROUP_ID``: a failed group back into the conversion queue."""

from __future__ import annotations

import argparse
import time

from dsa110_ingest.cli._common import iso_time, say
from dsa110_ingest.config import Config

NAME = "retry"
HELP = "put a failed group back in the conversion queue"
DESCRIPTION = (
    "The running daemon converts it again; without a daemon, use `dsa110-ingest convert GROUP_ID`."
)
EXIT_CODES = {
    0: "queued again, or nothing to do (the group is not failed)",
    1: "the group has no conversion job (unknown, or not complete)",
}


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("group_id", type=iso_time, metavar="GROUP_ID", help="e.g. 2025-10-02T00:12:00")


def run(cfg: Config, args: argparse.Namespace) -> int:
    return retry(cfg, args.group_id)


def retry(cfg: Config, group_id: str) -> int:
    from dsa110_ingest.db import open_index

    with open_index(cfg) as hdf5:
        job = hdf5.job(group_id)
        if job is None:
            say(
                f"retry: {group_id} has no conversion job (is the group complete? see "
                "`dsa110-ingest groups`)",
                "error",
            )
            return 1
        if not hdf5.retry_failed_job(group_id, time.time()):
            # as `convert` of a converted group: nothing to do is not an error
            say(f"retry: {group_id} is {job.state}, not failed; nothing to do")
            return 0
    from dsa110_ingest.service import daemon_status  # the service imports this module's peers

    daemon = daemon_status(cfg)
    who = (
        f"the running daemon (pid {daemon['pid']}) picks it up"
        if daemon["state"] == "running"
        else f"but no daemon is running to pick it up (it is {daemon['state']}); start it, "
        f"or convert it now with `dsa110-ingest convert {group_id}`"
    )
    say(f"retry: {group_id} is pending again; {who}")
    return 0
