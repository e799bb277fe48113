"""The live daemon: real watchdog observers, real writers, real processes and signals."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from dsa110_ingest.config import Config
from dsa110_ingest.ingest.watcher import FileEvent
from dsa110_ingest.sdnotify import Notifier
from dsa110_ingest.service import Service, ServiceHooks
from dsa110_ingest.tools.simulate import file_name, plan_groups, write_subband_file

from .conftest import SMALL, Site, db_count, wait_for, write_file, write_site


def _hdf5(site: Site) -> Path:
    return site.root / "state" / "hdf5.sqlite3"


def _indexed(site: Site) -> int:
    return db_count(_hdf5(site), "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 1")


def _events(site: Site, type_: str = "group.complete") -> int:
    return db_count(_hdf5(site), "SELECT COUNT(*) FROM events WHERE type = ?", (type_,))


def _one_group(
    site: Site,
    start: str = "2025-10-02T00:00:00",
    into: Path | None = None,
    mode: str = "inplace",
    missing: tuple[int, ...] = (),
) -> list[Path]:
    (plan,) = plan_groups(1, start, 2.0, missing=missing)
    return [
        write_file(into or site.incoming, t, sb, SMALL, mode, plan.start_unix)
        for sb, t in sorted(plan.files.items())
    ]


@pytest.mark.parametrize("mode", ["inplace", "tmp_rename", "rsync"])
def test_each_writer_style_is_indexed_once_and_completes_the_group(
    site: Site, daemon_factory, mode: str
) -> None:
    d = daemon_factory(site)
    d.wait_ready()
    _one_group(site, mode=mode)
    wait_for(lambda: _events(site) == 1, 20, lambda: d.log.read_text()[-3000:])
    assert _indexed(site) == 16
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM rejected_files") == 0
    assert sorted(p.name for p in site.incoming.iterdir()) == sorted(
        p.name for p in site.incoming.iterdir() if not p.name.startswith(".")
    )
    assert d.stop() == 0


def test_slow_in_place_write_is_taken_only_after_close(
    site: Site, daemon_factory, tmp_path: Path
) -> None:
    d = daemon_factory(site)
    d.wait_ready()
    src = tmp_path / "src.hdf5"
    write_subband_file(src, 1759363200, 0, SMALL)
    data = src.read_bytes()
    dest = site.incoming / file_name(1759363200, 0)
    with open(dest, "wb") as f:  # a writer trickling the file in over ~2 s, then closing
        for i in range(10):
            f.write(data[i * len(data) // 10 : (i + 1) * len(data) // 10])
            f.flush()
            time.sleep(0.2)
            assert _indexed(site) == 0
        closed_at = time.time()
    wait_for(lambda: _indexed(site) == 1, 10)
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM rejected_files") == 0
    indexed_at = (
        db_count(_hdf5(site), "SELECT CAST(indexed_at * 1000 AS INTEGER) FROM hdf5_file_index")
        / 1000
    )
    assert indexed_at >= closed_at - 0.05
    d.stop()


def test_copy_and_move_in_from_an_unwatched_folder(
    site: Site, daemon_factory, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    files = _one_group(site, into=outside)
    d = daemon_factory(site)
    d.wait_ready()
    for p in files[:8]:
        shutil.copy(p, site.incoming / p.name)
    for p in files[8:]:
        os.rename(p, site.incoming / p.name)  # same filesystem: a rename into the folder
    wait_for(lambda: _events(site) == 1, 20, lambda: d.log.read_text()[-3000:])
    assert _indexed(site) == 16
    d.stop()


def test_move_between_locations_and_delete(tmp_path: Path, daemon_factory) -> None:
    site = write_site(tmp_path, extra_locations=("archive",))
    d = daemon_factory(site)
    d.wait_ready()
    files = _one_group(site)
    wait_for(lambda: _events(site) == 1, 20)
    shutil.move(files[0], site.extra["archive"] / files[0].name)
    files[1].unlink()
    wait_for(
        lambda: (
            db_count(
                _hdf5(site),
                "SELECT COUNT(*) FROM hdf5_file_index WHERE path = ?",
                (str(site.extra["archive"] / files[0].name),),
            )
            == 1
        ),
        10,
    )
    wait_for(
        lambda: db_count(_hdf5(site), "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 0") == 1,
        10,
    )
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM hdf5_file_index") == 16
    assert _events(site) == 1
    d.stop()


def test_group_completed_while_the_daemon_was_down(site: Site, daemon_factory) -> None:
    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
    items = sorted(plan.files.items())
    d = daemon_factory(site)
    d.wait_ready()
    for sb, t in items[:8]:
        write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
    wait_for(lambda: _indexed(site) == 8, 10)
    assert d.stop() == 0
    for sb, t in items[8:]:
        write_file(site.incoming, t, sb, SMALL, obs_start_unix=plan.start_unix)
    d2 = daemon_factory(site)
    d2.wait_ready()
    assert _events(site) == 1 and _indexed(site) == 16  # done by the start-up reconcile
    d2.stop()


def test_polling_location(tmp_path: Path, daemon_factory) -> None:
    site = write_site(tmp_path, watch="poll")
    d = daemon_factory(site)
    d.wait_ready()
    assert '"mode": "poll"' in d.log.read_text()
    _one_group(site)
    wait_for(lambda: _events(site) == 1, 20, lambda: d.log.read_text()[-2000:])
    d.stop()


def test_auto_mode_polls_on_fuse_and_nfs(tmp_path: Path) -> None:
    from dsa110_ingest.config import StorageLocation
    from dsa110_ingest.ingest.watch_mode import choose_mode

    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"/dev/vda / ext4 rw 0 0\nserver:/x {tmp_path}/nfs nfs4 rw 0 0\n"
        f"/dev/sdb1 {tmp_path}/ntfs fuseblk rw 0 0\n"
    )
    for sub, want in (("nfs", "poll"), ("ntfs", "poll"), ("local", "inotify")):
        (tmp_path / sub).mkdir()
        loc = StorageLocation(sub, tmp_path / sub)
        assert choose_mode(loc, str(mounts))[0] == want


def test_sigterm_exits_zero_quickly_and_sighup_reopens_logs(tmp_path: Path, daemon_factory) -> None:
    site = write_site(tmp_path, toml_extra="")
    text = site.config_path.read_text().replace(
        'log_level = "debug"', f'log_level = "debug"\nlog_file = "{tmp_path}/ingest.log"'
    )
    site.config_path.write_text(text)
    d = daemon_factory(site)
    wait_for(
        lambda: (
            (tmp_path / "ingest.log").exists()
            and "service.ready" in (tmp_path / "ingest.log").read_text()
        ),
        20,
    )
    os.rename(tmp_path / "ingest.log", tmp_path / "ingest.log.1")  # logrotate
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: (tmp_path / "ingest.log").exists(), 5)
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 5
    assert "service.stopped" in (tmp_path / "ingest.log").read_text()


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.5)
        self.msgs: list[str] = []

    def until(self, pred: Callable[[list[str]], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not pred(self.msgs):
            with contextlib.suppress(TimeoutError):
                self.msgs.extend(self.sock.recv(4096).decode().split("\n"))
        assert pred(self.msgs), self.msgs


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_socket_protocol(site: Site, daemon_factory, tmp_path: Path, abstract: bool) -> None:
    address = f"@dsa110-test-{os.getpid()}" if abstract else str(tmp_path / "notify.sock")
    listener = NotifyListener(address)
    d = daemon_factory(site, NOTIFY_SOCKET=address, WATCHDOG_USEC="600000")
    listener.until(lambda m: "READY=1" in m)
    listener.until(lambda m: m.count("WATCHDOG=1") >= 3)
    assert any(m.startswith("STATUS=") for m in listener.msgs)
    d.proc.send_signal(signal.SIGTERM)
    listener.until(lambda m: "STOPPING=1" in m)
    assert d.proc.wait(15) == 0  # a second SIGTERM would mean "now", exit 1
    listener.sock.close()


def _in_process(cfg: Config, **hooks) -> tuple[Service, threading.Thread, list[str]]:  # type: ignore[no-untyped-def]
    """The service in a thread of the test, to reach inside (threads, injected faults)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pings: list[str] = []
    n = Notifier(None, watchdog_usec=400_000)
    n._sock, n.address = a, "unused"
    n.send = lambda *fields: pings.extend(fields) or True  # type: ignore[method-assign]
    svc = Service(cfg, convert=False, notifier=n, hooks=ServiceHooks(**hooks))
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    wait_for(lambda: "READY=1" in pings, 20)
    b.close()
    return svc, t, pings


def test_dead_watcher_thread_stops_the_watchdog_pings(site: Site) -> None:
    svc, t, pings = _in_process(site.cfg)
    wait_for(lambda: pings.count("WATCHDOG=1") >= 2, 10)
    assert svc.watcher is not None
    for obs in svc.watcher.observers.values():
        obs.stop()  # the thread dies, as an uncaught error in it would
    time.sleep(0.6)
    before = pings.count("WATCHDOG=1")
    time.sleep(1.5)
    assert pings.count("WATCHDOG=1") == before
    assert svc.metrics.watcher_alive._value.get() == 0
    svc.should_exit = True
    t.join(10)


def test_dropped_events_are_recovered_by_reconcile_after_an_overflow(site: Site) -> None:
    dropped: list[FileEvent] = []
    svc, t, _ = _in_process(site.cfg, watch_drop=lambda e: dropped.append(e) or True)
    svc.watcher.settler.settle_s = 3600  # type: ignore[union-attr]  # only events could find them
    _one_group(site)
    wait_for(lambda: len(dropped) >= 16, 10)
    time.sleep(0.5)
    assert _indexed(site) == 0
    # watchdog reports a kernel queue overflow only as this log record
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    wait_for(lambda: _events(site) == 1, 10)
    # the counter goes up when the reconcile returns, after its batches (and the event)
    # were committed: a loaded CI run read it in between once
    found = svc.metrics.reconcile_found._value
    wait_for(lambda: found.get() >= 16, 10, lambda: f"reconcile_found = {found.get()}")
    assert found.get() == 16
    svc.should_exit = True
    t.join(10)


def test_events_follow_and_metrics(site: Site, daemon_factory) -> None:
    port = _free_port()
    d = daemon_factory(site, "--metrics-listen", f"127.0.0.1:{port}")
    d.wait_ready()
    follower = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "events", "--follow"],
        env=site.env(),
        stdout=subprocess.PIPE,
        text=True,
        cwd=site.root,
    )
    try:
        _one_group(site)
        assert follower.stdout is not None
        e = json.loads(follower.stdout.readline())
        assert e["type"] == "group.complete" and len(e["payload"]["files"]) == 16
    finally:
        follower.kill()
        follower.wait()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "dsa110_ingest_files_indexed_total 16.0" in body
    assert 'dsa110_ingest_events_total{type="group.complete"} 1.0' in body
    assert "dsa110_ingest_event_latency_seconds_count 1.0" in body
    hb = json.loads(site.cli("status", "--json").stdout)["heartbeat"]
    assert hb["pid"] == d.proc.pid and hb["age_seconds"] < 10
    d.stop()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sigkill_at_random_moments_loses_and_doubles_nothing(site: Site, daemon_factory) -> None:
    rng = random.Random(1234)
    plans = plan_groups(6, "2025-10-02T00:00:00", 3.0)
    files = [(p, sb, t) for p in plans for sb, t in sorted(p.files.items())]
    writer_done = threading.Event()

    def writer() -> None:
        for p, sb, t in files:
            write_file(
                site.incoming, t, sb, SMALL, rng.choice(["inplace", "tmp_rename"]), p.start_unix
            )
            time.sleep(rng.uniform(0, 0.02))
        writer_done.set()

    threading.Thread(target=writer, daemon=True).start()
    kills = 0
    while not writer_done.is_set() or kills < 5:
        d = daemon_factory(site)
        time.sleep(rng.uniform(0.3, 1.5))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        kills += 1
    d = daemon_factory(site)
    d.wait_ready()
    wait_for(lambda: _events(site) == 6, 30)
    assert _indexed(site) == 96
    assert (
        db_count(
            _hdf5(site), "SELECT COUNT(DISTINCT group_id) FROM events WHERE type = 'group.complete'"
        )
        == 6
    )
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM groups") == 6
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM rejected_files") == 0
    assert d.stop() == 0


def test_location_that_disappears_and_comes_back(site: Site, daemon_factory) -> None:
    d = daemon_factory(site)
    d.wait_ready()
    files = _one_group(site, missing=(15,))
    wait_for(lambda: _indexed(site) == 15, 10)
    away = site.root / "incoming.unmounted"
    os.rename(site.incoming, away)  # unmounted / renamed under the daemon
    wait_for(lambda: "location.missing" in d.log.read_text(), 10)
    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
    write_file(away, plan.files[15], 15, SMALL, obs_start_unix=plan.start_unix)
    time.sleep(0.5)
    assert db_count(_hdf5(site), "SELECT COUNT(*) FROM hdf5_file_index WHERE stored = 0") == 0
    os.rename(away, site.incoming)
    wait_for(lambda: _events(site) == 1, 15, lambda: d.log.read_text()[-3000:])
    assert _indexed(site) == 16 and len(files) == 15
    assert d.stop() == 0


def test_events_jsonl_mirror_survives_sigkill_without_gaps_or_repeats(
    tmp_path: Path, daemon_factory
) -> None:
    site = write_site(tmp_path, toml_extra="")
    mirror = tmp_path / "events.jsonl"
    site.config_path.write_text(
        site.config_path.read_text().replace(
            'log_level = "debug"', f'log_level = "debug"\nevents_jsonl = "{mirror}"'
        )
    )
    d = daemon_factory(site)
    d.wait_ready()
    _one_group(site)
    wait_for(lambda: mirror.exists() and "group.complete" in mirror.read_text(), 10)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    _one_group(site, start="2025-10-02T01:00:00", missing=(2,))
    _one_group(site, start="2025-10-02T02:00:00")
    d2 = daemon_factory(site)
    d2.wait_ready()
    wait_for(lambda: mirror.read_text().count("group.complete") == 2, 10)
    assert d2.stop() == 0
    lines = [json.loads(x) for x in mirror.read_text().splitlines()]
    assert [e["id"] for e in lines] == list(range(1, len(lines) + 1))
    assert [e["id"] for e in lines] == [e["id"] for e in site.events()]


# -- health, metrics, logs, notify (issue 10) -----------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_healthz_metrics_and_404_on_the_metrics_port(site: Site) -> None:
    from dsa110_ingest.metrics import package_version

    port = _free_port()
    cfg = site.cfg.with_overrides(metrics_listen=f"127.0.0.1:{port}")
    svc, t, _pings = _in_process(cfg)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(base + "/healthz")[0] == 200, 20)
    code, body = _get(base + "/healthz")
    assert body == "ok\n"
    for path in ("/", "/metrics/x", "/health", "/favicon.ico"):
        assert _get(base + path)[0] == 404, path
    code, body = _get(base + "/metrics")
    assert code == 200
    assert 'dsa110_ingest_build_info{python="' in body and f'version="{package_version()}"' in body
    assert "_created" not in body
    for name in ("heartbeat", "last_event", "last_file_indexed"):
        assert f"dsa110_ingest_{name}_timestamp_seconds" in body
    # a dead watcher makes the daemon unhealthy at the next heartbeat
    assert svc.watcher is not None
    for obs in svc.watcher.observers.values():
        obs.stop()
    wait_for(lambda: _get(base + "/healthz")[0] == 503, 20)
    assert "watcher" in _get(base + "/healthz")[1]
    svc.should_exit = True
    t.join(10)


def test_gauges_drop_to_zero_when_a_state_empties() -> None:
    from dsa110_ingest.metrics import Metrics

    m = Metrics()
    m.set_states({"complete": 2}, {"running": 1, "pending": 3})
    m.set_states({"complete": 3}, {"converted": 4})
    assert m.conversions.labels("running")._value.get() == 0
    assert m.conversions.labels("pending")._value.get() == 0
    assert m.conversions.labels("failed")._value.get() == 0
    assert m.groups.labels("collecting")._value.get() == 0
    # a state we did not know of is zeroed too once it empties
    m.set_states({"conflict": 1}, {})
    m.set_states({}, {})
    assert m.groups.labels("conflict")._value.get() == 0


def test_docs_list_every_metric_of_the_registry() -> None:
    import re

    from dsa110_ingest.metrics import Metrics

    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = docs.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(dsa110_ingest_[a-z_]+)", section))
    assert listed == Metrics().names()


def test_timestamps_follow_indexing_and_events(site: Site) -> None:
    svc, t, _ = _in_process(site.cfg)
    assert svc.metrics.last_event._value.get() == 0
    before = time.time()
    _one_group(site)
    wait_for(lambda: svc.metrics.last_event._value.get() >= before, 20)
    assert svc.metrics.last_file_indexed._value.get() >= before
    wait_for(lambda: svc.metrics.heartbeat._value.get() >= before, 20)
    svc.should_exit = True
    t.join(10)


def test_too_many_open_files_in_reconcile_is_logged_and_survived(site: Site) -> None:
    import errno

    from structlog.testing import capture_logs

    svc, t, _ = _in_process(site.cfg)
    assert svc.indexer is not None
    real = svc.indexer.reconcile
    calls = {"n": 0}

    def failing(*a, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*a, **kw)

    with capture_logs() as logs_seen:
        svc.indexer.reconcile = failing  # type: ignore[method-assign]
        svc.watcher.settler.settle_s = 3600  # type: ignore[union-attr]  # reconcile must find them
        _one_group(site)
        svc.watcher.request_reconcile("test")  # type: ignore[union-attr]
        # inotify may complete the group before the requested reconcile runs (a loaded CI
        # run saw the event first): wait for both, the failure logged and the group whole
        wait_for(
            lambda: (
                _events(site) == 1
                and any(e["event"] == "service.too_many_open_files" for e in logs_seen)
            ),
            40,
        )
    assert t.is_alive() and calls["n"] >= 1
    assert svc.metrics.fd_exhausted._value.get() >= 1
    svc.should_exit = True
    t.join(10)


def test_notify_never_blocks_on_a_full_socket_queue(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)  # bound, never read: its queue fills up
    n = Notifier(path)
    done = threading.Event()

    def flood() -> None:
        for _ in range(5000):
            n.watchdog()
        done.set()

    th = threading.Thread(target=flood, daemon=True)
    th.start()
    # a blocking send would hang here for as long as nobody reads the socket
    assert done.wait(60)
    assert n.dropped > 0
    sink.close()


def test_startup_reconcile_extends_the_start_timeout_before_ready(site: Site, sim_groups) -> None:
    sim_groups(site.incoming, n=2)
    _, t, pings = _in_process(site.cfg)
    assert any(p.startswith("EXTEND_TIMEOUT_USEC=") for p in pings[: pings.index("READY=1")])
    t.join(0.1)


def test_state_files_get_private_modes_whatever_the_umask(tmp_path: Path) -> None:
    site = write_site(tmp_path / "s")
    site.config_path.write_text('events_jsonl = "ev/events.jsonl"\n' + site.config_path.read_text())
    _one_group(site)
    code = (
        "import os, sys; os.umask(0); from dsa110_ingest.cli import main; "
        "sys.exit(main(['run', '--rescan']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=site.env(), capture_output=True, text=True, cwd=site.root
    )
    assert r.returncode == 0, r.stderr

    def mode(p: Path) -> int:
        return os.stat(p).st_mode & 0o777

    assert mode(site.root / "state") == 0o750
    assert mode(site.root / "state" / "hdf5.sqlite3") == 0o640
    assert mode(site.root / "ev") == 0o750
    assert mode(site.root / "ev" / "events.jsonl") == 0o640
    assert mode(site.root / "state" / "hdf5.sqlite3.lock") == 0o640


def test_daemon_log_file_is_0640_under_umask_000(site: Site, tmp_path: Path) -> None:
    site.config_path.write_text(
        site.config_path.read_text().replace(
            'log_level = "debug"\n', 'log_level = "debug"\nlog_file = "logs/ingest.log"\n'
        )
    )
    code = (
        "import os, sys; os.umask(0); from dsa110_ingest.cli import main; sys.exit(main(['run']))"
    )
    p = subprocess.Popen([sys.executable, "-c", code], env=site.env(), cwd=site.root)
    log_path = site.root / "logs" / "ingest.log"
    try:
        wait_for(lambda: log_path.exists() and "service.ready" in log_path.read_text(), 30)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    assert os.stat(log_path).st_mode & 0o777 == 0o640
    assert os.stat(site.root / "logs").st_mode & 0o777 == 0o750


def test_off_a_terminal_rescan_stderr_is_json_lines_only(site: Site) -> None:
    _one_group(site)
    (site.incoming / "2025-10-02T01:00:00_sb00.hdf5").write_bytes(b"not hdf5")
    r = site.cli("run", "--rescan", "--no-convert", check=False)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines]  # raises on any plain-text line
    summary = [e for e in parsed if e["event"] == "rescan.summary"]
    assert len(summary) == 1 and summary[0]["indexed"] == 16 and summary[0]["rejected"] == 1
    # long work reports progress off a terminal (here: the final report of the pass)
    progress = [e for e in parsed if e["event"] == "reconcile.progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 17
    assert "eta_s" in progress[-1] and "files_per_s" in progress[-1]
    for e in parsed:
        assert e["timestamp"].endswith("Z")  # ISO 8601 UTC, one format


def test_journald_stream_gets_syslog_priority_prefixes(site: Site, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        r = subprocess.run(
            [sys.executable, "-m", "dsa110_ingest", "run", "--rescan", "--no-convert"],
            env=site.env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
            stdout=subprocess.PIPE,
            stderr=f,
            cwd=site.root,
            text=True,
        )
    lines = err.read_text().splitlines()
    assert lines, r
    prios = {}
    for ln in lines:
        assert ln.startswith("<") and ln[2] == ">", ln
        prios.setdefault(json.loads(ln[3:])["level"], set()).add(int(ln[1]))
    assert prios.get("info") == {6}
    # the same run without JOURNAL_STREAM (or redirected elsewhere): plain JSON
    r2 = site.cli("run", "--rescan", "--no-convert", JOURNAL_STREAM="1:2")
    assert all(ln.startswith("{") for ln in r2.stderr.splitlines() if ln.strip())


def test_journald_priorities_for_errors(site: Site, tmp_path: Path) -> None:
    shutil.rmtree(site.incoming)
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        subprocess.run(
            [sys.executable, "-m", "dsa110_ingest", "run", "--rescan", "--no-convert"],
            env=site.env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
            stderr=f,
            cwd=site.root,
        )
    errors = [ln for ln in err.read_text().splitlines() if '"level": "error"' in ln]
    assert errors and all(ln.startswith("<3>") for ln in errors)


def test_python_api_prints_nothing_on_stdout(site: Site, tmp_path: Path) -> None:
    _one_group(site)
    (site.incoming / "2025-10-02T01:00:00_sb00.hdf5").write_bytes(b"not hdf5")
    code = (
        "from pathlib import Path; import dsa110_ingest as d; "
        f"d.index_hdf5_files(Path({str(site.incoming)!r}), Path({str(tmp_path / 'x.sqlite3')!r}))"
    )
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert db_count(tmp_path / "x.sqlite3", "SELECT COUNT(*) FROM hdf5_file_index") == 16
    # an application that configures logging gets our records, on its own handler
    host = "import logging, sys; logging.basicConfig(stream=sys.stderr); " + code.replace(
        "x.sqlite3", "y.sqlite3"
    )
    r = subprocess.run([sys.executable, "-c", host], capture_output=True, text=True, env=env)
    assert r.stdout == ""
    assert "WARNING:dsa110_ingest" in r.stderr and "file.rejected" in r.stderr


def test_too_many_open_files_when_starting_a_conversion_is_survived(tmp_path: Path) -> None:
    import errno

    from dsa110_ingest.convert.executor import LocalProcessExecutor

    from .conftest import converter_script

    script = converter_script(tmp_path / "conv")
    site = write_site(
        tmp_path / "s",
        convert=f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", '
        '"{inputs}"]\noutput_dir = "ms"\nlease_seconds = 3\n',
    )

    class OutOfFds(LocalProcessExecutor):
        failures = 0

        def submit(self, req):  # type: ignore[no-untyped-def]
            if OutOfFds.failures < 2:
                OutOfFds.failures += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return super().submit(req)

    n = Notifier(None)
    svc = Service(site.cfg, notifier=n, hooks=ServiceHooks(executor=OutOfFds()))
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    _one_group(site)
    wait_for(lambda: _events(site, "group.converted") == 1, 60)
    assert OutOfFds.failures == 2 and t.is_alive()
    assert svc.dispatcher is not None and svc.dispatcher.alive()
    attempts = db_count(_hdf5(site), "SELECT attempts FROM conversion_jobs")
    assert attempts == 1  # the refused starts did not count as attempts
    svc.should_exit = True
    t.join(15)


def test_daemon_status_running_stale_stopped(site: Site, daemon_factory) -> None:
    from dsa110_ingest.service import STALE_AFTER_S, daemon_status

    assert daemon_status(site.cfg)["state"] == "stopped"
    d = daemon_factory(site)
    d.wait_ready()
    # the first heartbeat follows service.ready within a loop turn
    st = wait_for(lambda: (s := daemon_status(site.cfg))["state"] == "running" and s, 20)
    assert st["pid"] == d.proc.pid
    assert daemon_status(site.cfg, now=time.time() + STALE_AFTER_S + 10)["state"] == "stale"
    d.proc.send_signal(signal.SIGSTOP)  # hung: holds the lock, writes no heartbeat
    try:
        assert daemon_status(site.cfg, now=time.time() + 60)["state"] == "stale"
    finally:
        d.proc.send_signal(signal.SIGCONT)
    d.kill()
    assert daemon_status(site.cfg)["state"] == "stopped"


def test_progress_bar_on_a_terminal_keeps_log_lines_above_it(tmp_path: Path) -> None:
    import pty

    from .conftest import converter_script

    script = converter_script(tmp_path / "conv")
    site = write_site(
        tmp_path / "s",
        convert=f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", '
        '"{inputs}"]\noutput_dir = "ms"\n',
    )
    _one_group(site)
    (site.incoming / "2025-10-02T01:00:00_sb00.hdf5").write_bytes(b"not hdf5")
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "run", "--rescan"],
        env=site.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=site.root,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(60) == 0
    os.close(master)
    text = out.decode()
    assert "ETA" in text and "files" in text and "groups converted" in text
    # a log line replaces the bar on its line (cleared first), the bar is redrawn below
    lines = text.split("\r\n")
    rejected = [ln for ln in lines if "file.rejected" in ln]
    assert rejected and all(ln.startswith("\r\x1b[K") for ln in rejected), rejected
    assert all("#" not in ln.split("file.rejected")[0] for ln in rejected)
    assert all(ln.rstrip("\r").endswith("\x1b[0m") for ln in rejected)  # not erased after
    assert "\r\x1b[K" in text
