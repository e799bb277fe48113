"""The fault matrix: each fault during a stream of groups, then the ledger must be exact."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dsa110_ingest.ingest.watcher import FileEvent
from dsa110_ingest.tools.simulate import plan_groups, write_file

from ..conftest import SMALL, db_count, hold_write_lock, wait_for
from .conftest import assert_exact, ledger, reliability_site, stand_in_converter


def _stream(
    site, n: int, start: str = "2025-10-02T00:00:00", pause: float = 0.05, dest: Path | None = None
) -> threading.Thread:
    def run() -> None:
        for plan in plan_groups(n, start, 3.0):
            for sb, t in sorted(plan.files.items()):
                write_file(
                    dest or site.incoming,
                    t,
                    sb,
                    SMALL,
                    random.choice(["inplace", "tmp_rename"]),
                    plan.start_unix,
                )
            time.sleep(pause)

    th = threading.Thread(target=run)
    th.start()
    return th


def _converted(site) -> int:
    return db_count(
        site.root / "state" / "hdf5.sqlite3",
        "SELECT COUNT(*) FROM conversion_jobs WHERE state = 'converted'",
    )


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (from /proc: its DB work has begun)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
    return False


KILLS = 10


def test_sigkill_daemon_at_random_moments_of_its_work(
    tmp_path: Path, daemon_factory, record
) -> None:
    """Each kill lands 0-1 s after the daemon opened its index DB: in migrations, the
    start-up reconcile, indexing transactions, claims and conversions. (A fixed delay
    after the spawn, as this test once used, mostly killed a daemon still importing
    h5py on a busy machine, before it had touched anything: those kills proved nothing.)"""
    conv = stand_in_converter(tmp_path / "c", "time.sleep(0.2)")
    site = reliability_site(tmp_path / "s", conv)
    hdf5 = site.root / "state" / "hdf5.sqlite3"
    n = 24
    writer = _stream(site, n, pause=0.3)
    rng = random.Random(20)
    kills = 0
    t0 = time.monotonic()
    while kills < KILLS:
        d = daemon_factory(site)
        wait_for(
            lambda d=d: _has_open(d.proc.pid, hdf5) or d.proc.poll() is not None,
            120,
            lambda d=d: f"the daemon never opened {hdf5}:\n{d.log.read_text()[-3000:]}",
        )
        assert d.proc.poll() is None, d.log.read_text()[-3000:]
        time.sleep(rng.uniform(0.0, 1.0))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        kills += 1
    writer.join()
    d = daemon_factory(site)
    wait_for(lambda: _converted(site) == n, 90, lambda: d.log.read_text()[-3000:])
    recover = time.monotonic() - t0
    assert d.stop() == 0
    led = ledger(site)
    assert_exact(led, n)
    record(
        f"SIGKILL of the daemon at {KILLS} random moments of its work",
        groups=n,
        files=16 * n,
        kills=kills,
        lost=0,
        duplicated=0,
        rejected=led["rejected"],
        seconds_to_all_converted=round(recover),
    )


def test_sigkill_conversion_workers(tmp_path: Path, daemon_factory, record) -> None:
    marker = tmp_path / "pids"
    conv = stand_in_converter(
        tmp_path / "c",
        f"open({str(marker)!r}, 'a').write(str(os.getppid()) + '\\n'); time.sleep(0.5)",
    )
    site = reliability_site(tmp_path / "s", conv)
    n = 6
    d = daemon_factory(site)
    d.wait_ready()
    writer = _stream(site, n)
    killed: set[int] = set()
    deadline = time.monotonic() + 30
    while len(killed) < 3 and time.monotonic() < deadline:
        for line in marker.read_text().split() if marker.exists() else []:
            pid = int(line)
            if pid not in killed:
                try:
                    os.kill(pid, signal.SIGKILL)  # the worker process, mid-conversion
                    killed.add(pid)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    writer.join()
    wait_for(lambda: _converted(site) == n, 60, lambda: d.log.read_text()[-3000:])
    assert d.stop() == 0
    led = ledger(site)
    assert_exact(led, n)
    assert not list((site.root / "ms").glob(".*tmp-*"))
    record(
        "SIGKILL of a conversion worker mid-conversion",
        groups=n,
        kills=len(killed),
        lost=0,
        duplicated=0,
        half_written_ms=0,
    )


@pytest.mark.parametrize(("which", "seconds"), [("hdf5", 25), ("products", 15)])
def test_db_write_locked_past_the_busy_timeout(
    tmp_path: Path, daemon_factory, record, which: str, seconds: int
) -> None:
    """Held past the 10 s busy timeout (the HDF5 DB through two heartbeats, which then
    fail): the daemon logs it, keeps its work and carries on once the lock is gone."""
    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv)
    # no group-expiry writes while idle: the heartbeat is the write that meets the lock
    site.config_path.write_text(
        site.config_path.read_text().replace(
            "incomplete_check_seconds = 0.2", "incomplete_check_seconds = 3600"
        )
    )
    d = daemon_factory(site)
    d.wait_ready()
    time.sleep(1)  # past the loop's first pass, which runs the expiry check once
    db = site.root / "state" / f"{which}.sqlite3"
    locker = hold_write_lock(db, seconds)
    if which == "hdf5":  # an idle daemon: its heartbeat hits the lock first, and fails
        wait_for(
            lambda: "waiting for the database" in d.log.read_text(),
            20,
            lambda: d.log.read_text()[-2000:],
        )
    n = 4
    writer = _stream(site, n, pause=1.0)
    writer.join()
    locker.wait()
    wait_for(lambda: _converted(site) == n, 90, lambda: d.log.read_text()[-3000:])
    assert d.proc.poll() is None  # stayed up through it
    assert d.stop() == 0
    assert_exact(ledger(site), n)
    record(
        f"{which} DB write-locked by another process for {seconds} s (busy timeout 10 s)",
        groups=n,
        lost=0,
        duplicated=0,
        daemon_exits=0,
    )


def _daemon_argv() -> list[str]:
    """Root ignores file modes; the service's own user does not: as root, drop the
    capabilities that let it (setpriv), so an unwritable folder is unwritable."""
    argv = [sys.executable, "-m", "dsa110_ingest", "run"]
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot make a folder unwritable for the daemon")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]


def test_output_dir_unwritable_then_writable(tmp_path: Path, record) -> None:
    argv = _daemon_argv()
    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv)
    out = site.root / "ms"
    out.mkdir()
    out.chmod(0o555)
    log = open(site.root / "d.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        argv, env=site.env(), stdout=log, stderr=subprocess.STDOUT, cwd=site.root
    )
    try:
        n = 3
        _stream(site, n).join()
        hdf5 = site.root / "state" / "hdf5.sqlite3"
        # the output_dir's ownership claim cannot be made: conversions wait, saying why
        wait_for(
            lambda: (
                '"kind": "unwritable"' in (site.root / "d.log").read_text()
                and db_count(hdf5, "SELECT COUNT(*) FROM conversion_jobs") == n
            ),
            30,
            lambda: (site.root / "d.log").read_text()[-2000:],
        )
        failed_attempts = db_count(hdf5, "SELECT COALESCE(SUM(attempts), 0) FROM conversion_jobs")
        assert failed_attempts == 0  # no attempt spent on a folder nobody can write
        out.chmod(0o755)
        t0 = time.monotonic()
        wait_for(lambda: _converted(site) == n, 60, lambda: (site.root / "d.log").read_text())
        recover = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    assert_exact(ledger(site), n)
    record(
        "output directory unwritable, then writable",
        groups=n,
        lost=0,
        duplicated=0,
        failed_attempts_while_unwritable=failed_attempts,
        seconds_to_recover=round(recover, 1),
    )


def test_storage_location_disappears_and_returns(tmp_path: Path, daemon_factory, record) -> None:
    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv)
    d = daemon_factory(site)
    d.wait_ready()
    _stream(site, 2).join()
    wait_for(lambda: _converted(site) == 2, 30)
    away = site.root / "incoming.unmounted"
    os.rename(site.incoming, away)
    wait_for(lambda: "location.missing" in d.log.read_text(), 10)
    _stream(site, 2, start="2025-10-02T01:00:00", dest=away).join()  # written while away
    time.sleep(1)
    stored0 = db_count(
        site.root / "state" / "hdf5.sqlite3",
        "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 0",
    )
    os.rename(away, site.incoming)
    t0 = time.monotonic()
    wait_for(lambda: _converted(site) == 4, 30, lambda: d.log.read_text()[-3000:])
    recover = time.monotonic() - t0
    assert d.stop() == 0
    assert stored0 == 0  # nothing was declared deleted while the mount was gone
    assert_exact(ledger(site), 4)
    record(
        "storage location disappears (renamed) and comes back",
        groups=4,
        lost=0,
        duplicated=0,
        marked_deleted_while_away=stored0,
        seconds_to_recover=round(recover, 1),
    )


def test_output_disk_full_then_space(tmp_path: Path, daemon_factory, record) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the output needs root")
    conv = stand_in_converter(
        tmp_path / "c",
        "open(os.path.join(os.path.dirname(out), "
        "'pad-' + os.path.basename(out)), 'wb')"
        ".write(b'x' * 40000)",
    )
    site = reliability_site(tmp_path / "s", conv)
    out = site.root / "ms"
    out.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(out)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        d = daemon_factory(site)
        d.wait_ready()
        n = 4
        _stream(site, n).join()
        hdf5 = site.root / "state" / "hdf5.sqlite3"
        wait_for(
            lambda: (
                db_count(
                    hdf5,
                    "SELECT COUNT(*) FROM conversion_jobs WHERE "
                    "last_error IS NOT NULL AND state = 'pending'",
                )
                >= 1
            ),
            30,
            lambda: d.log.read_text()[-3000:],
        )
        converted_when_full = _converted(site)
        subprocess.run(["mount", "-o", "remount,size=8m", str(out)], check=True)
        t0 = time.monotonic()
        wait_for(lambda: _converted(site) == n, 60, lambda: d.log.read_text()[-3000:])
        recover = time.monotonic() - t0
        assert d.stop() == 0
        assert_exact(ledger(site), n)
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)
    record(
        "output disk full (96 KiB tmpfs), then space",
        groups=n,
        lost=0,
        duplicated=0,
        converted_before_space=converted_when_full,
        seconds_to_recover=round(recover, 1),
    )


def test_inotify_overflow_recovered_by_reconcile(tmp_path: Path, record) -> None:
    from dsa110_ingest.service import Service, ServiceHooks

    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv)
    dropped: list[FileEvent] = []
    rng = random.Random(3)
    svc = Service(
        site.cfg,
        hooks=ServiceHooks(watch_drop=lambda e: rng.random() < 0.5 and not dropped.append(e)),
    )  # type: ignore[func-returns-value]
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    wait_for(lambda: svc.watcher is not None and svc.watcher.modes, 20)
    assert svc.watcher is not None
    svc.watcher.settler.settle_s = 3600  # only the reconcile can find what was dropped
    n = 4
    _stream(site, n).join()
    time.sleep(0.5)
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    wait_for(lambda: _converted(site) == n, 60)
    svc.should_exit = True
    t.join(20)
    assert_exact(ledger(site), n)
    found = svc.metrics.reconcile_found._value.get()
    assert found >= 1
    record(
        "inotify queue overflow (half the events dropped before the indexer)",
        groups=n,
        events_dropped=len(dropped),
        found_by_reconcile=int(found),
        lost=0,
        duplicated=0,
    )


def test_clock_jumps(tmp_path: Path, record) -> None:
    """Clock jumps are checked with an injected clock in tests/ingest/test_indexer.py
    (test_wall_clock_jumps_neither_expire_early_nor_never); recorded here for the table."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).parents[1] / "ingest" / "test_indexer.py"),
            "-k",
            "clock_jumps or restart_waited",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout
    record(
        "system clock jumps (+1 d, -1 d, +3 h, -10 min; injected clock)",
        cases=5,
        early_timeouts=0,
        missed_timeouts=0,
    )


# -- operating conditions (issue 9, items 7, 8, 9, 11) ------------------------------------


def _hdf5(site) -> Path:  # type: ignore[no-untyped-def]
    return site.root / "state" / "hdf5.sqlite3"


def test_second_daemon_on_one_state_refuses_naming_the_pid(
    tmp_path: Path, daemon_factory, record
) -> None:
    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv, output=str(tmp_path / "ms"))
    first = daemon_factory(site)
    first.wait_ready()
    refused = 0
    for args in (("run",), ("run", "--rescan")):
        r = site.cli(*args, check=False, timeout=60)
        assert r.returncode == 1, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        assert f"pid {first.proc.pid}" in lines[0] and "Traceback" not in r.stderr
        refused += 1
    writer = _stream(site, 2)
    writer.join()
    wait_for(lambda: _converted(site) == 2, 60, lambda: first.log.read_text()[-3000:])
    assert first.stop() == 0
    assert_exact(ledger(site), 2)
    # SIGKILLed holder: the kernel drops the flock, the next daemon starts
    second = daemon_factory(site)
    second.wait_ready()
    second.kill()
    third = daemon_factory(site)
    third.wait_ready()
    assert third.stop() == 0
    record("second daemon on one state", attempts=refused, second_daemons_started=0, lost=0)


@pytest.mark.timeout(900)
def test_idle_metrics_connections_under_a_low_fd_limit(
    tmp_path: Path, daemon_factory, record
) -> None:
    import resource
    import socket
    import urllib.error
    import urllib.request

    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv, output=str(tmp_path / "ms"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    limit = 256  # soft limit in the daemon, as `ulimit -n` / LimitNOFILE would set it
    env = site.env()
    logf = open(tmp_path / "daemon.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "run", "--metrics-listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=site.root,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    )
    log = tmp_path / "daemon.log"
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: "service.ready" in log.read_text(), 60, lambda: log.read_text())
        for _ in range(limit + 200):
            c = socket.socket()
            c.settimeout(5)
            try:
                c.connect(("127.0.0.1", port))
            except OSError:
                c.close()
                continue
            idle.append(c)
        writer = _stream(site, 2)
        writer.join()
        wait_for(lambda: _converted(site) == 2, 120, lambda: log.read_text()[-3000:])
        assert proc.poll() is None, log.read_text()[-3000:]

        # the server still answers once the idle ones time out
        def healthy() -> bool:
            try:
                return (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
                    == 200
                )
            except (urllib.error.URLError, OSError):
                return False

        wait_for(healthy, 60)
        n_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert n_fds < limit - 50, n_fds
    finally:
        for c in idle:
            c.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        logf.close()
    assert rc == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert_exact(ledger(site), 2)
    record(
        "idle metrics connections",
        connections=len(idle),
        fd_limit=limit,
        daemon_fds_after=n_fds,
        daemon_exits=0,
        lost=0,
        duplicated=0,
    )


def test_hdf5_db_deleted_while_running_exits_and_never_reuses_event_ids(
    tmp_path: Path, daemon_factory, record
) -> None:
    conv = stand_in_converter(tmp_path / "c")
    site = reliability_site(tmp_path / "s", conv, output=str(tmp_path / "ms"))
    d = daemon_factory(site)
    d.wait_ready()
    _stream(site, 2).join()
    wait_for(lambda: _converted(site) == 2, 60, lambda: d.log.read_text()[-3000:])
    ids_before = [e["id"] for e in site.events()]
    high = max(ids_before)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(_hdf5(site)) + suffix)
    rc = d.proc.wait(60)  # the heartbeat notices within seconds
    d._logf.close()
    assert rc == 1, d.log.read_text()[-3000:]
    assert any(ln.get("event") == "service.db_lost" for ln in d.lines())
    # systemd would restart it: the new DB re-indexes the files, ids continue above `high`
    d2 = daemon_factory(site)
    d2.wait_ready()
    wait_for(lambda: any(e["id"] > high for e in site.events()), 60)
    new_ids = [e["id"] for e in site.events()]
    assert min(new_ids) > high, (high, new_ids)
    assert d2.stop() == 0
    record(
        "HDF5 DB deleted while running",
        events_before=len(ids_before),
        daemon_exit_code=rc,
        ids_reused=len(set(ids_before) & set(new_ids)),
    )


needs_mount_ns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="mounting a tmpfs needs root (or a user namespace) and util-linux",
)


@needs_mount_ns
def test_mount_over_a_location_is_watched_at_once(tmp_path: Path, record) -> None:
    from ..conftest import write_site

    site = write_site(tmp_path / "s", toml_extra="")
    # a day between periodic reconciles: only the mount watch can find the new files
    text = site.config_path.read_text().replace(
        "[watch]\n", "[watch]\nrescan_interval_seconds = 86400\n"
    )
    site.config_path.write_text(text)
    log = tmp_path / "daemon.log"
    logf = open(log, "w")  # noqa: SIM115
    # the daemon in a private mount namespace, so the tmpfs is seen only there
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "dsa110_ingest", "run"],
        env=site.env(),
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=site.root,
    )
    try:
        wait_for(lambda: "service.ready" in log.read_text(), 60, lambda: log.read_text())
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(proc.pid),
                "-m",
                "mount",
                "-t",
                "tmpfs",
                "none",
                str(site.incoming),
            ],
            check=True,
        )
        wait_for(lambda: "location.mount_changed" in log.read_text(), 30, log.read_text)
        # write inside the namespace, onto the tmpfs
        (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
        stage = tmp_path / "stage"
        stage.mkdir()
        for sb, t in sorted(plan.files.items()):
            write_file(stage, t, sb, SMALL, "inplace", plan.start_unix)
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(proc.pid),
                "-m",
                "sh",
                "-c",
                f'cp "{stage}"/*.hdf5 "{site.incoming}"/',
            ],
            check=True,
        )
        hdf5 = site.root / "state" / "hdf5.sqlite3"
        wait_for(
            lambda: (
                db_count(hdf5, "SELECT COUNT(*) FROM events WHERE type = 'group.complete'") == 1
            ),
            60,
            lambda: log.read_text()[-3000:],
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        logf.close()
    assert rc == 0
    record("filesystem mounted over a location", files=16, lost=0, reconcile_interval_s=86400)
