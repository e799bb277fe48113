"""A lease holder is "gone" only with proof: same host, boot and pid namespace and a dead
pid, or this very machine in an earlier boot (review finding 6). A same-named host or
container, a pid of another namespace, an owner of an older release: unknown, not gone.
Real processes (one in a real second pid namespace where the machine allows it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsa110_ingest.leases import gone, holder_of, owner_name
from dsa110_ingest.procs import boot_id, machine_id, pid_namespace, this_process

OTHER_BOOT = "00000000-1111-2222-3333-444444444444"
OTHER_NS = "4026530000"
OTHER_MACHINE = "0123456789abcdef0123456789abcdef"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(60)
    return p.pid


def _owner(pid: int, boot: str | None, pidns: str | None, machine: str | None) -> str:
    return ":".join(
        [
            "convert",
            socket.gethostname(),
            str(pid),
            "abcd1234",
            boot or "",
            pidns or "",
            machine or "",
        ]
    )


def test_this_process_names_its_boot_and_pid_namespace() -> None:
    me = this_process()
    assert me.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert f"pid:[{me.pidns}]" == os.readlink("/proc/self/ns/pid")
    h = holder_of(owner_name("convert"))
    assert h is not None and h.kind == "convert" and h.proc == me
    d = holder_of(owner_name())
    assert d is not None and d.kind == "daemon" and d.proc == me


def test_a_dead_pid_of_this_host_boot_and_namespace_is_gone() -> None:
    pid = _dead_pid()
    h = holder_of(_owner(pid, boot_id(), pid_namespace(), machine_id()))
    assert h is not None and gone(h, time.time())
    alive = holder_of(_owner(os.getpid(), boot_id(), pid_namespace(), machine_id()))
    assert alive is not None and not gone(alive, time.time() + 5)


@pytest.mark.parametrize(
    "why",
    ["another pid namespace", "another boot of another machine", "an owner of an older release"],
)
def test_a_dead_pid_named_elsewhere_is_not_gone(why: str) -> None:
    """The pid is dead here, but it was never a pid of this namespace (or we cannot
    tell): only the lease's expiry may free the group."""
    pid = _dead_pid()
    owner = {
        "another pid namespace": _owner(pid, boot_id(), OTHER_NS, machine_id()),
        "another boot of another machine": _owner(pid, OTHER_BOOT, pid_namespace(), OTHER_MACHINE),
        "an owner of an older release": f"convert:{socket.gethostname()}:{pid}:abcd1234",
    }[why]
    h = holder_of(owner)
    assert h is not None and h.pid == pid
    assert not gone(h, time.time())


def test_this_machine_in_an_earlier_boot_is_gone() -> None:
    if machine_id() is None or boot_id() is None:
        pytest.skip("no /etc/machine-id or boot_id here")
    h = holder_of(_owner(os.getpid(), OTHER_BOOT, pid_namespace(), machine_id()))
    assert h is not None and gone(h, time.time())  # even though the pid is alive now


def test_a_holder_in_a_real_second_pid_namespace_is_not_gone(tmp_path: Path) -> None:
    """A process in its own pid namespace (a container on this host, same host name)
    whose pid is dead in ours: the old check (host + pid) called it gone."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    target = 32000  # its pid in its namespace: chosen unused in ours
    out = tmp_path / "owner"
    script = (
        f"echo {target - 1} > /proc/sys/kernel/ns_last_pid; "
        f"{sys.executable} -c 'import sys, time; from dsa110_ingest.leases import owner_name; "
        f'open(sys.argv[1], "w").write(owner_name("convert")); time.sleep(600)\' {out}; :'
    )
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script]
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text()) and proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail("the process in the second namespace never wrote its owner name")
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("cannot make a pid namespace here (unshare needs CAP_SYS_ADMIN)")
        h = holder_of(out.read_text())
        assert h is not None and h.proc.pidns != pid_namespace()
        if h.pid != target or os.path.exists(f"/proc/{h.pid}"):
            pytest.skip(f"pid {h.pid} of the second namespace is in use in ours")
        assert h.host == socket.gethostname() and h.proc.boot == boot_id()
        assert not gone(h, time.time())
    finally:
        proc.kill()
        proc.wait(60)


def test_an_expired_lease_says_whether_it_is_retried_or_failed() -> None:
    from dsa110_ingest.db.records import ConversionJob
    from dsa110_ingest.leases import stale_note

    now = 1_000_000.0
    job = ConversionJob(
        "2025-10-02T00:00:00", "running", None, 0, 2, 0.0, owner_name(), now - 10, None,
        None, now - 100, now - 100, now - 100, None, "tok",
    )  # fmt: skip
    retried = stale_note(job, "local", now, max_attempts=3)
    assert retried is not None and "retried by the next daemon claim" in retried
    used_up = stale_note(job, "local", now, max_attempts=2)
    assert used_up is not None and "attempts are used up (2 of max_attempts 2)" in used_up
    assert "dsa110-ingest retry 2025-10-02T00:00:00" in used_up
    assert stale_note(job, "local", now) == retried  # no limit given: as before


def test_a_host_that_cannot_read_its_identity_judges_its_own_processes_by_host_and_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/proc hides boot_id and the pid namespace (a sandbox, a hardened /proc): a record
    made here lacks them as this process does, so host and pid decide as before they
    were recorded (review4 finding 4); a record that has them stays unknown here."""
    from dsa110_ingest import procs

    monkeypatch.setattr(procs, "boot_id", lambda: None)
    monkeypatch.setattr(procs, "pid_namespace", lambda: None)
    assert this_process().boot is None and this_process().pidns is None
    dead = holder_of(owner_name("convert").replace(str(os.getpid()), str(_dead_pid()), 1))
    assert dead is not None and dead.proc.boot is None and gone(dead, time.time())
    me = holder_of(owner_name("convert"))
    assert me is not None and not gone(me, time.time() + 5)
    recorded = holder_of(_owner(_dead_pid(), OTHER_BOOT, OTHER_NS, None))
    assert recorded is not None and not gone(recorded, time.time())
