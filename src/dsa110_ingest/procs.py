"""Which process is which, across hosts, containers and reboots, and whether one is gone
(for lock holders, lease holders and the partial files a killed run left).

A pid means something only in the pid namespace that gave it, and only until the kernel
reboots: two containers with the same host name have their own pid 1234, and after a
reboot pid 1234 is someone else. So a process is named by where its pid is valid too:

- ``machine``: /etc/machine-id, the installation (stable across reboots);
- ``boot``: /proc/sys/kernel/random/boot_id, this run of the kernel (shared by every
  container on it, different on every other host and after every reboot);
- ``pidns``: the inode of /proc/self/ns/pid, the pid namespace (one per container).

A holder is provably gone only when it is named on this host, this boot and this pid
namespace (or neither it nor this process could read them) and no process has its pid,
or when it is named on this very machine (host name and machine id) in an earlier boot.
Anything else (another host, another container, or an old record without these fields)
is unknown: not gone.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while a process ``pid`` exists in *this* pid namespace, also when another user
    owns it; a pid recorded elsewhere means nothing here (see :func:`gone`)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _read(path: str) -> str | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return text or None


@functools.cache
def boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


@functools.cache
def machine_id() -> str | None:
    return _read("/etc/machine-id")


def pid_namespace() -> str | None:
    """The inode number of this process's pid namespace (``pid:[4026531836]``)."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    inode = link.partition("[")[2].rstrip("]")
    return inode if inode.isdigit() else None


@dataclass(frozen=True)
class Proc:
    """A process and where its pid means something; None: not recorded (an old row)."""

    host: str
    pid: int
    boot: str | None = None
    pidns: str | None = None
    machine: str | None = None

    def fields(self) -> dict[str, str | None]:
        """What is recorded besides host and pid (lease owners, heartbeats, file names)."""
        return {"boot": self.boot, "pidns": self.pidns, "machine": self.machine}


def this_process() -> Proc:
    return Proc(socket.gethostname(), os.getpid(), boot_id(), pid_namespace(), machine_id())


def same_namespace(p: Proc) -> bool:
    """Whether ``p``'s pid is a pid of this namespace: same host, boot and pid namespace,
    each equal. A field neither side has (this host's /proc hides it: a sandbox, a
    hardened /proc) leaves host and pid to decide, as before fields were recorded; a
    field one side has and the other lacks is unknown (an older record), not the same."""
    me = this_process()
    return p.host == me.host and p.boot == me.boot and p.pidns == me.pidns


def rebooted(p: Proc) -> bool:
    """Whether ``p`` ran on this very machine (host name and machine id) in an earlier
    boot: every process of that boot is gone."""
    me = this_process()
    return (
        p.host == me.host
        and p.machine is not None
        and p.machine == me.machine
        and p.boot is not None
        and me.boot is not None
        and p.boot != me.boot
    )


def gone(p: Proc) -> bool:
    """Whether ``p`` is provably gone (see the module's docstring); unknown is not gone."""
    if p.pid <= 0:
        return False
    if rebooted(p):
        return True
    return same_namespace(p) and not pid_alive(p.pid)
