"""Who holds a conversion lease, and whether that process is provably gone.

A lease owner names its process: ``<host>:<pid>:<nonce>:<boot>:<pidns>:<machine>`` for a
daemon's dispatcher, ``convert:`` and the same for a foreground ``convert`` (procs.py
says what boot, pidns and machine are; owners written before they were recorded have
only ``<host>:<pid>:<nonce>`` and read as "unknown"). A process is *provably* gone when it
ran on this machine in an earlier boot, or when it is of this host, boot and pid
namespace and no process has its pid, that pid is a zombie, or the process with that pid
started after the lease was taken (the pid was reused). Anything else (another host or
container, or an owner without these fields) only the lease's expiry settles.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dsa110_ingest.db.records import ConversionJob
from dsa110_ingest.procs import Proc, pid_alive, rebooted, same_namespace, this_process

# /proc/stat's btime is whole seconds: a process started within this of the lease's
# start is not proof of a reused pid
_START_SLACK_S = 1.0


@dataclass(frozen=True)
class Holder:
    kind: str  # "convert" (a foreground `convert`) or "daemon"
    proc: Proc

    @property
    def host(self) -> str:
        return self.proc.host

    @property
    def pid(self) -> int:
        return self.proc.pid


def owner_name(kind: str = "daemon") -> str:
    """A fresh lease owner naming this process (``kind``: "daemon" or "convert")."""
    me = this_process()
    ident = [me.host, str(me.pid), uuid.uuid4().hex[:8], *(v or "" for v in me.fields().values())]
    return ":".join((["convert"] if kind == "convert" else []) + ident)


def holder_of(owner: str | None) -> Holder | None:
    """The process named by a lease owner; None when the owner names none."""
    if not owner:
        return None
    parts = owner.split(":")
    kind = "daemon"
    if parts[0] == "convert":
        kind, parts = "convert", parts[1:]
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    boot, pidns, machine = [*parts[3:6], "", "", ""][:3]  # "": not recorded (older owners)
    return Holder(kind, Proc(parts[0], int(parts[1]), boot or None, pidns or None, machine or None))


def _proc_start(pid: int) -> tuple[str, float] | None:
    """(state letter, start time in unix seconds) from /proc; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return fields[0], btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def gone(holder: Holder, since: float | None) -> bool:
    """Whether the holder is provably gone: it ran on this machine in an earlier boot, or
    it is of this host, boot and pid namespace and no live process of that pid started
    before ``since`` (the lease's start)."""
    if holder.pid <= 0:
        return False
    if rebooted(holder.proc):
        return True
    if not same_namespace(holder.proc):
        return False  # another host, container, or an old owner: unknown
    if not pid_alive(holder.pid):
        return True
    proc = _proc_start(holder.pid)
    if proc is None:
        return False
    state, started = proc
    reused = since is not None and started > since + _START_SLACK_S
    return state == "Z" or reused


def can_take_over(holder: Holder, executor: str) -> bool:
    """Whether a gone holder's conversion died with it: a foreground ``convert`` runs it
    in its own process, a daemon's local executor in children that die with the daemon
    (PR_SET_PDEATHSIG); a Dask task may still be running on a worker."""
    return holder.kind == "convert" or executor == "local"


def stale_note(
    job: ConversionJob, executor: str, now: float | None = None, max_attempts: int = 0
) -> str | None:
    """For a ``running`` job whose converter is gone (or whose lease expired): what
    happened and when it is retried (or, its ``max_attempts`` used up, failed); None
    while the conversion is alive."""
    if job.state != "running":
        return None
    now = time.time() if now is None else now
    expires = job.lease_expires_at or 0.0
    holder = holder_of(job.lease_owner)
    who = (
        f"pid {holder.pid}" + ("" if holder.host == socket.gethostname() else f" on {holder.host}")
        if holder
        else str(job.lease_owner)
    )
    if expires <= now:
        lapsed = f"was running in {who}, which stopped renewing its lease {now - expires:.0f} s ago"
        if 0 < max_attempts <= job.attempts:
            return (
                f"{lapsed}; its attempts are used up ({job.attempts} of max_attempts "
                f"{max_attempts}): the next daemon marks it failed, not retried "
                f"(`dsa110-ingest retry {job.group_id}` once the cause is fixed)"
            )
        return f"{lapsed}: retried by the next daemon claim or `dsa110-ingest convert`"
    if holder is None or not gone(holder, job.started_at):
        return None
    now_too = (
        f"; `dsa110-ingest convert {job.group_id}` takes it over now"
        if can_take_over(holder, executor)
        else ""
    )
    return (
        f"was running in {who}, which is gone; retried when the lease expires in "
        f"{expires - now:.0f} s{now_too}"
    )
